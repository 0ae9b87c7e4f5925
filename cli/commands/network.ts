import { Sandbox } from "../../sdk/sandbox.js";
import type { ConnectionInfo, SandboxInfo } from "../../sdk/types.js";
import { commonOptions, parseCommand, usageError, wholeNumber } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { CliError, exitCodes } from "../errors.js";
import { printJson, renderFields, renderTable } from "../output.js";
import { sandboxUsage } from "./sandbox.js";

/** The lines `wrenn sandbox get` and `network` print for a sandbox's egress rules. */
export function describeNetwork(info: SandboxInfo): Array<[string, string]> {
  const list = (entries: string[] | undefined) => (entries && entries.length > 0 ? entries.join(", ") : "-");
  return [
    ["internet", info.internetAccess ? "on" : "off"],
    ["allow out", list(info.network?.allowOut)],
    ["deny out", list(info.network?.denyOut)],
  ];
}

function internetSwitch(value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined;
  if (value === "on" || value === "off") return value === "on";
  throw new CliError(`--internet takes on or off, got "${value}"`, { exitCode: exitCodes.usage });
}

/**
 * `wrenn sandbox network <id> [--allow X]… [--deny Y]… [--internet on|off] [--clear]`: without
 * options it shows the rules; `--allow`/`--deny` replace both lists whole (as the API does);
 * `--internet` alone keeps the lists; `--clear` removes every rule.
 */
export async function network(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    {
      ...commonOptions,
      allow: { type: "string", multiple: true },
      deny: { type: "string", multiple: true },
      internet: { type: "string" },
      clear: { type: "boolean", default: false },
    },
    sandboxUsage,
  );
  if (values.help) {
    ctx.output.out(sandboxUsage);
    return exitCodes.ok;
  }
  const id = positionals[0];
  if (!id || positionals.length > 1) usageError("sandbox network takes one sandbox id", sandboxUsage);
  const internetAccess = internetSwitch(values.internet);
  const lists = values.allow !== undefined || values.deny !== undefined;
  if (values.clear && lists)
    usageError("--clear removes every rule; it cannot be combined with --allow/--deny", sandboxUsage);
  const sandbox = await Sandbox.connect(id, await connection(ctx, values));
  let info = sandbox.info;
  if (lists || values.clear || internetAccess !== undefined) {
    const keep = !lists && !values.clear;
    info = await sandbox.updateNetwork({
      allowOut: keep ? (info.network?.allowOut ?? []) : (values.allow ?? []),
      denyOut: keep ? (info.network?.denyOut ?? []) : (values.deny ?? []),
      ...(internetAccess !== undefined ? { internetAccess } : {}),
    });
  }
  if (values.json) printJson(ctx.output, { id: info.id, network: info.network, internetAccess: info.internetAccess });
  else for (const line of renderFields(describeNetwork(info))) ctx.output.out(line);
  return exitCodes.ok;
}

const columns = [
  { header: "seq", value: (c: ConnectionInfo) => String(c.seq) },
  { header: "time", value: (c: ConnectionInfo) => c.time.replace("T", " ").replace(/\.\d+Z$/, "Z") },
  { header: "proto", value: (c: ConnectionInfo) => c.protocol },
  {
    header: "destination",
    value: (c: ConnectionInfo) =>
      c.address ? `${c.address.includes(":") ? `[${c.address}]` : c.address}:${c.port}` : "-",
  },
  { header: "name", value: (c: ConnectionInfo) => (c.name ? `${c.name} (${c.nameSource ?? "?"})` : "-") },
  { header: "verdict", value: (c: ConnectionInfo) => c.verdict },
  { header: "rule", value: (c: ConnectionInfo) => `${c.rule} [${c.list}]` },
  {
    header: "bytes out/in",
    value: (c: ConnectionInfo) =>
      c.bytesOut === null && c.bytesIn === null ? "-" : `${c.bytesOut ?? 0}/${c.bytesIn ?? 0}`,
  },
];

function verdictOf(value: string | undefined): "allowed" | "denied" | undefined {
  if (value === undefined || value === "allowed" || value === "denied") return value;
  throw new CliError(`--verdict takes allowed or denied, got "${value}"`, { exitCode: exitCodes.usage });
}

function protocolOf(value: string | undefined): "tcp" | "udp" | "dns" | undefined {
  if (value === undefined || value === "tcp" || value === "udp" || value === "dns") return value;
  throw new CliError(`--protocol takes tcp, udp or dns, got "${value}"`, { exitCode: exitCodes.usage });
}

/**
 * `wrenn sandbox connections <id> [--follow] [--json] [--verdict allowed|denied] [--protocol P]
 * [--limit N]`: the sandbox's connection log, oldest first (also after it stopped). `--follow`
 * keeps printing new entries until Ctrl-C; `--json` prints a JSON array, or one object per line
 * with `--follow`.
 */
export async function connections(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    {
      ...commonOptions,
      follow: { type: "boolean", short: "f", default: false },
      verdict: { type: "string" },
      protocol: { type: "string" },
      limit: { type: "string" },
    },
    sandboxUsage,
  );
  if (values.help) {
    ctx.output.out(sandboxUsage);
    return exitCodes.ok;
  }
  const id = positionals[0];
  if (!id || positionals.length > 1) usageError("sandbox connections takes one sandbox id", sandboxUsage);
  const filter = {
    ...(values.verdict !== undefined ? { verdict: verdictOf(values.verdict) } : {}),
    ...(values.protocol !== undefined ? { protocol: protocolOf(values.protocol) } : {}),
  };
  const limit = wholeNumber(values.limit, "--limit") ?? 1000;
  const sandbox = await Sandbox.connect(id, await connection(ctx, values));
  if (values.follow) {
    const widths = columns.map((c) => c.header.length);
    let header = false;
    for await (const entry of sandbox.watchConnections({ ...filter, signal: ctx.signal })) {
      if (values.json) {
        ctx.output.out(JSON.stringify(entry));
        continue;
      }
      // A table that grows: each row is printed as it comes, so columns keep the header's widths at least.
      const cells = columns.map((c) => c.value(entry));
      if (!header) {
        ctx.output.out(columns.map((c, i) => c.header.toUpperCase().padEnd(widths[i] ?? 0)).join("  "));
        header = true;
      }
      ctx.output.out(cells.map((v, i) => (i === cells.length - 1 ? v : v.padEnd(widths[i] ?? 0))).join("  "));
    }
    return exitCodes.ok;
  }
  const all: ConnectionInfo[] = [];
  let after: number | undefined;
  do {
    const page = await sandbox.connections({ ...filter, limit: Math.min(1000, limit - all.length), after });
    all.push(...page.connections);
    after = page.nextAfter ?? undefined;
  } while (after !== undefined && all.length < limit);
  if (values.json) printJson(ctx.output, all);
  else for (const line of renderTable(all, columns)) ctx.output.out(line);
  return exitCodes.ok;
}
