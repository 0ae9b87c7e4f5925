import { Sandbox } from "../../sdk/sandbox.js";
import type { SnapshotInfo } from "../../sdk/types.js";
import { commonOptions, durationSeconds, parseCommand, usageError, wholeNumber } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { CliError, exitCodes } from "../errors.js";
import { printJson, relativeTime, renderFields, renderTable } from "../output.js";

export const snapshotUsage = `usage: wrenn snapshot <command> [options]

  create <sandbox-id> [--name N] [-q]
                     snapshot a sandbox (it runs on); start sandboxes from it with
                     wrenn sandbox create --snapshot <id>
  list   [--sandbox ID] [--state ready,deleted,…]
  get    <id>
  delete <id>…       sandboxes started from it keep running

A snapshot lives on the host that took it; sandboxes from it start there. "memory: yes" means they
resume its running processes (QEMU, Firecracker, gVisor); "no" means files only (namespace runtime).

Every command takes --json, --api-url URL and --api-key KEY.`;

export const forkUsage = `usage: wrenn sandbox fork <id> [--count N] [--timeout 5m]

  One snapshot of the sandbox, then N (1–10, default 1) sandboxes from it on the same host.
  Each fork succeeds or fails on its own; the exit code is 1 when any failed.`;

function describe(s: SnapshotInfo): Array<[string, string]> {
  const fields: Array<[string, string]> = [
    ["id", s.id],
    ["state", s.state],
    ["name", s.name ?? "-"],
    ["sandbox", s.sourceSandboxId],
    ["template", s.template],
    ["host", s.hostId ?? "-"],
    ["runtime", s.runtime || "-"],
    ["memory", s.keepsMemory ? "yes (processes resume)" : "no (files only; processes start fresh)"],
    ["resources", `${s.vcpus} vCPU, ${s.memoryMb} MiB`],
    ["size", `${(s.sizeBytes / 2 ** 20).toFixed(1)} MiB`],
    ["created", s.createdAt],
  ];
  if (s.error) fields.push(["error", s.error]);
  return fields;
}

/** `wrenn snapshot …` */
export async function snapshotCommand(ctx: CommandContext, args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  const { values, positionals } = parseCommand(
    rest,
    {
      ...commonOptions,
      name: { type: "string" },
      sandbox: { type: "string" },
      state: { type: "string" },
      quiet: { type: "boolean", short: "q", default: false },
    },
    snapshotUsage,
  );
  if (values.help || verb === "help") {
    ctx.output.out(snapshotUsage);
    return exitCodes.ok;
  }
  switch (verb) {
    case "create": {
      const id = positionals[0];
      if (!id || positionals.length > 1) usageError("snapshot create takes one sandbox id", snapshotUsage);
      const sandbox = await Sandbox.connect(id, await connection(ctx, values));
      const snapshot = await sandbox.createSnapshot(values.name ? { name: values.name } : {});
      if (values.json) printJson(ctx.output, snapshot);
      else if (values.quiet) ctx.output.out(snapshot.id);
      else for (const line of renderFields(describe(snapshot))) ctx.output.out(line);
      return exitCodes.ok;
    }
    case "list":
    case "ls": {
      if (positionals.length > 0) usageError("snapshot list takes no positional arguments", snapshotUsage);
      const options: Parameters<typeof Sandbox.listSnapshots>[0] = { ...(await connection(ctx, values)) };
      if (values.sandbox) options.sandboxId = values.sandbox;
      if (values.state) options.states = values.state.split(",").map((s) => s.trim()) as SnapshotInfo["state"][];
      const snapshots = await Sandbox.listSnapshots(options);
      if (values.json) {
        printJson(ctx.output, snapshots);
        return exitCodes.ok;
      }
      const now = new Date();
      for (const line of renderTable(snapshots, [
        { header: "id", value: (s) => s.id },
        { header: "name", value: (s) => s.name ?? "-" },
        { header: "state", value: (s) => s.state },
        { header: "sandbox", value: (s) => s.sourceSandboxId },
        { header: "template", value: (s) => s.template },
        { header: "memory", value: (s) => (s.keepsMemory ? "yes" : "no") },
        { header: "created", value: (s) => relativeTime(s.createdAt, now) },
      ]))
        ctx.output.out(line);
      return exitCodes.ok;
    }
    case "get":
    case "info": {
      const id = positionals[0];
      if (!id || positionals.length > 1) usageError("snapshot get takes one snapshot id", snapshotUsage);
      const snapshot = await Sandbox.getSnapshot(id, await connection(ctx, values));
      if (values.json) printJson(ctx.output, snapshot);
      else for (const line of renderFields(describe(snapshot))) ctx.output.out(line);
      return exitCodes.ok;
    }
    case "delete":
    case "rm": {
      if (positionals.length === 0) usageError("snapshot delete needs at least one snapshot id", snapshotUsage);
      const conn = await connection(ctx, values);
      for (const id of positionals) {
        await Sandbox.deleteSnapshot(id, conn);
        if (!values.json) ctx.output.err(`deleted ${id}`);
      }
      if (values.json) printJson(ctx.output, { deleted: positionals });
      return exitCodes.ok;
    }
    case undefined:
      ctx.output.err(snapshotUsage);
      return exitCodes.usage;
    default:
      return usageError(`unknown snapshot command "${verb}"`, snapshotUsage);
  }
}

/** `wrenn sandbox fork <id> --count N` */
export async function fork(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    { ...commonOptions, count: { type: "string", short: "n" }, timeout: { type: "string" } },
    forkUsage,
  );
  if (values.help) {
    ctx.output.out(forkUsage);
    return exitCodes.ok;
  }
  const id = positionals[0];
  if (!id || positionals.length > 1) usageError("sandbox fork takes one sandbox id", forkUsage);
  const count = wholeNumber(values.count, "--count") ?? 1;
  if (count < 1 || count > 10) {
    throw new CliError(`--count takes 1 to 10, got ${count}`, { exitCode: exitCodes.usage });
  }
  const timeoutSec = durationSeconds(values.timeout, "--timeout");
  const sandbox = await Sandbox.connect(id, await connection(ctx, values));
  const forks = await sandbox.fork({ count, ...(timeoutSec !== undefined ? { timeoutSec } : {}) });
  const failed = forks.filter((f) => !(f instanceof Sandbox)).length;
  if (values.json) {
    printJson(
      ctx.output,
      forks.map((f) => (f instanceof Sandbox ? { sandbox: f.info } : { error: { code: f.code, message: f.message } })),
    );
  } else {
    for (const f of forks) {
      if (f instanceof Sandbox) ctx.output.out(f.id);
      else ctx.output.err(`fork failed: ${f.code}: ${f.message}`);
    }
  }
  return failed > 0 ? exitCodes.failure : exitCodes.ok;
}
