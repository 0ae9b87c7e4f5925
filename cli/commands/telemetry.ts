import { Sandbox, type SandboxLogEntryInfo, type SandboxMetricInfo } from "../../sdk/sandbox.js";
import { commonOptions, durationSeconds, parseCommand, usageError, wholeNumber } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { CliError, exitCodes } from "../errors.js";
import { type Column, printJson, renderTable } from "../output.js";
import { sandboxUsage } from "./sandbox.js";

const levels = ["debug", "info", "warn", "error"] as const;
type Level = (typeof levels)[number];

function levelOf(value: string | undefined): Level | undefined {
  if (value === undefined) return undefined;
  if ((levels as readonly string[]).includes(value)) return value as Level;
  throw new CliError(`--level takes debug, info, warn or error; got "${value}"`, { exitCode: exitCodes.usage });
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

const metricColumns: Column<SandboxMetricInfo>[] = [
  { header: "time", value: (m) => m.timestamp },
  { header: "cpu", value: (m) => `${m.cpuUsedPct.toFixed(1)}% of ${m.cpuCount}` },
  { header: "memory", value: (m) => `${mib(m.memUsed)} / ${mib(m.memTotal)}` },
  { header: "disk", value: (m) => `${mib(m.diskUsed)} / ${mib(m.diskTotal)}` },
];

const logColumns: Column<SandboxLogEntryInfo>[] = [
  { header: "time", value: (l) => l.timestamp },
  { header: "level", value: (l) => l.level },
  { header: "message", value: (l) => l.message },
];

/** `wrenn sandbox metrics <id> [--since 10m]` */
export async function metrics(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(args, { ...commonOptions, since: { type: "string" } }, sandboxUsage);
  if (values.help) {
    ctx.output.out(sandboxUsage);
    return exitCodes.ok;
  }
  const id = positionals[0];
  if (!id || positionals.length > 1) usageError("sandbox metrics takes one sandbox id", sandboxUsage);
  const since = durationSeconds(values.since, "--since");
  const sandbox = await Sandbox.connect(id, await connection(ctx, values));
  const samples = await sandbox.metrics(
    since === undefined ? {} : { start: Math.floor(Date.now() / 1000) - since, end: new Date() },
  );
  if (values.json) printJson(ctx.output, samples);
  else for (const line of renderTable(samples, metricColumns)) ctx.output.out(line);
  return exitCodes.ok;
}

/** `wrenn sandbox logs <id> [--level L] [--search S] [--limit N]` */
export async function logs(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    { ...commonOptions, level: { type: "string" }, search: { type: "string" }, limit: { type: "string" } },
    sandboxUsage,
  );
  if (values.help) {
    ctx.output.out(sandboxUsage);
    return exitCodes.ok;
  }
  const id = positionals[0];
  if (!id || positionals.length > 1) usageError("sandbox logs takes one sandbox id", sandboxUsage);
  const level = levelOf(values.level);
  const limit = wholeNumber(values.limit, "--limit");
  const sandbox = await Sandbox.connect(id, await connection(ctx, values));
  const entries = await sandbox.logs({
    ...(level ? { level } : {}),
    ...(values.search !== undefined ? { search: values.search } : {}),
    ...(limit !== undefined ? { limit } : {}),
  });
  if (values.json) printJson(ctx.output, entries);
  else for (const line of renderTable(entries, logColumns)) ctx.output.out(line);
  return exitCodes.ok;
}
