import { WrennClient } from "../../sdk/admin.js";
import { commonOptions, parseCommand, usageError } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { exitCodes } from "../errors.js";
import { printJson, relativeTime, renderTable } from "../output.js";

const hostsUsage = `usage: wrenn hosts [command] [options]          (admin key)

  list                              every host agent (the default)
  register <address> --token T      add an agent, e.g. http://10.0.0.5:5007
  drain <id> | activate <id>        stop / resume placing sandboxes on it
  delete <id> [--force]             remove it (--force even with sandboxes on it)`;

/** `wrenn hosts …` */
export async function hostsCommand(ctx: CommandContext, args: string[]): Promise<number> {
  const verb = args[0] && !args[0].startsWith("-") ? args[0] : "list";
  const rest = verb === args[0] ? args.slice(1) : args;
  const { values, positionals } = parseCommand(
    rest,
    { ...commonOptions, token: { type: "string" }, force: { type: "boolean", default: false } },
    hostsUsage,
  );
  if (values.help) {
    ctx.output.out(hostsUsage);
    return exitCodes.ok;
  }
  const client = new WrennClient(await connection(ctx, values));
  switch (verb) {
    case "list":
    case "ls": {
      const hosts = await client.hosts.list();
      if (values.json) printJson(ctx.output, hosts);
      else {
        const now = new Date();
        for (const line of renderTable(hosts, [
          { header: "id", value: (h) => h.id },
          { header: "address", value: (h) => h.address },
          { header: "status", value: (h) => h.status },
          { header: "runtime", value: (h) => h.runtime },
          { header: "isolation", value: (h) => h.isolation },
          { header: "sandboxes", value: (h) => `${h.activeSandboxes ?? "?"}/${h.capacity.maxSandboxes}` },
          {
            header: "capacity",
            value: (h) => `${h.capacity.vcpus} vCPU, ${Math.round(h.capacity.memoryMb / 1024)} GiB`,
          },
          { header: "seen", value: (h) => relativeTime(h.lastSeenAt, now) },
          { header: "templates", value: (h) => h.templates.join(",") },
        ]))
          ctx.output.out(line);
      }
      return exitCodes.ok;
    }
    case "register": {
      const address = positionals[0];
      if (!address || !values.token) usageError("hosts register needs an address and --token", hostsUsage);
      const host = await client.hosts.register(address, values.token);
      if (values.json) printJson(ctx.output, host);
      else ctx.output.out(`${host.id} ${host.address} ${host.status} (${host.runtime}, isolation ${host.isolation})`);
      return exitCodes.ok;
    }
    case "drain":
    case "activate": {
      const id = positionals[0];
      if (!id) usageError(`hosts ${verb} needs a host id`, hostsUsage);
      const host = verb === "drain" ? await client.hosts.drain(id) : await client.hosts.activate(id);
      if (values.json) printJson(ctx.output, host);
      else ctx.output.out(`${host.id} ${host.status}`);
      return exitCodes.ok;
    }
    case "delete":
    case "rm": {
      const id = positionals[0];
      if (!id) usageError("hosts delete needs a host id", hostsUsage);
      await client.hosts.delete(id, { force: values.force });
      if (values.json) printJson(ctx.output, { deleted: id });
      else ctx.output.out(`${id} deleted`);
      return exitCodes.ok;
    }
    default:
      return usageError(`unknown hosts command "${verb}"`, hostsUsage);
  }
}
