import { readFile } from "node:fs/promises";
import { type RegisterHostOptions, WrennClient } from "../../sdk/admin.js";
import { commonOptions, parseCommand, usageError } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { CliError, exitCodes } from "../errors.js";
import { printJson, relativeTime, renderTable } from "../output.js";

const hostsUsage = `usage: wrenn hosts [command] [options]          (admin key)

  list                              every host agent (the default)
  register <address> --token T      add an agent, e.g. http://10.0.0.5:5007
      [--tls-pin SHA256]            https only: talk to it only if it presents this certificate
                                    (openssl x509 -noout -fingerprint -sha256 -in agent.crt)
      [--ca-file PATH]              https only: its certificate must chain to this CA (PEM)
  drain <id> | activate <id>        stop / resume placing sandboxes on it
  delete <id> [--force]             remove it (--force even with sandboxes on it)`;

/** `wrenn hosts …` */
export async function hostsCommand(ctx: CommandContext, args: string[]): Promise<number> {
  const verb = args[0] && !args[0].startsWith("-") ? args[0] : "list";
  const rest = verb === args[0] ? args.slice(1) : args;
  const { values, positionals } = parseCommand(
    rest,
    {
      ...commonOptions,
      token: { type: "string" },
      "tls-pin": { type: "string" },
      "ca-file": { type: "string" },
      force: { type: "boolean", default: false },
    },
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
      const tls = await registerTlsOptions({ tlsPin: values["tls-pin"], caFile: values["ca-file"] });
      const host = await client.hosts.register(address, values.token, tls);
      if (values.json) printJson(ctx.output, host);
      else {
        const pinned = [
          tls.tlsPin !== undefined ? "certificate pinned" : "",
          tls.caPem !== undefined ? "CA pinned" : "",
        ]
          .filter(Boolean)
          .join(", ");
        ctx.output.out(
          `${host.id} ${host.address} ${host.status} (${host.runtime}, isolation ${host.isolation}${pinned ? `, ${pinned}` : ""})`,
        );
      }
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

/**
 * The TLS options of `hosts register`: the pin is passed as typed (the edge normalises and checks it,
 * so the CLI and the API accept the same spellings); the CA file is read here, and a file that is
 * missing or holds no PEM certificate is a usage error before anything is sent.
 */
export async function registerTlsOptions(
  flags: { tlsPin?: string | undefined; caFile?: string | undefined },
  read: (path: string) => Promise<string> = (path) => readFile(path, "utf8"),
): Promise<RegisterHostOptions> {
  const options: RegisterHostOptions = {};
  if (flags.tlsPin !== undefined) {
    const pin = flags.tlsPin.trim();
    if (pin === "") usageError("--tls-pin needs the SHA-256 fingerprint of the agent's certificate", hostsUsage);
    options.tlsPin = pin;
  }
  if (flags.caFile !== undefined) {
    let pem: string;
    try {
      pem = await read(flags.caFile);
    } catch (err) {
      throw new CliError(`cannot read --ca-file ${flags.caFile}: ${(err as NodeJS.ErrnoException).code ?? err}`, {
        exitCode: exitCodes.usage,
      });
    }
    if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
      usageError(`--ca-file ${flags.caFile} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`, hostsUsage);
    }
    options.caPem = pem;
  }
  return options;
}
