// `--state all` asks for every state the API has; edge/contracts imports nothing, so it costs no start-up time.
import { sandboxStates } from "../../edge/contracts/enums.js";
import { Sandbox } from "../../sdk/sandbox.js";
import type { SandboxInfo, SandboxState } from "../../sdk/types.js";
import {
  commonOptions,
  durationSeconds,
  keyValues,
  parseCommand,
  shellQuote,
  usageError,
  wholeNumber,
} from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { CliError, exitCodes } from "../errors.js";
import { printJson, relativeTime, renderFields, renderTable } from "../output.js";

export const sandboxUsage = `usage: wrenn sandbox <command> [options]

  create   [--template T | --snapshot ID] [--vcpus N] [--memory MiB] [--timeout 5m] [--on-timeout kill|pause]
           [--env K=V]… [--metadata K=V]… [--no-internet] [--allow X]… [--deny Y]… [-q]
  list     [--state running,paused|all] [--metadata K=V]…
  get      <id>
  exec     <id> [--cwd DIR] [--env K=V]… [--user U] [--timeout 60s] -- <command> [args…]
  shell    <id> [--user U] [--cwd DIR] [--cmd /bin/bash]
  cp       <src> <dst>          one side is <id>:<path>, e.g. ./a.txt abc…:/home/user/a.txt
  run-code <id> --file x.py     run Python in a code-interpreter sandbox (images saved to files)
  pause    <id>
  resume   <id> [--timeout 5m]
  kill     <id>…
  timeout  <id> <duration> [--on-timeout kill|pause]
  network  <id> [--allow X]… [--deny Y]… [--internet on|off] [--clear]
           egress rules (addresses, CIDRs, domains, *.domain; allow beats deny); no options: show them
  connections <id> [--follow] [--verdict allowed|denied] [--protocol tcp|udp|dns] [--limit N]
           what the sandbox connected to (also after it stopped)
  metrics  <id> [--since 10m]   CPU, memory and disk over time (also after it stopped)
  logs     <id> [--level info|warn|error] [--search S] [--limit N]
           processes started and their exit codes, and the sandbox's lifecycle
  history  <id> [--search Q] [--limit N] [--output]
           the commands it ran with exit codes and output head/tail (also after it stopped)
  snapshot <id> [--name N]      snapshot it (see wrenn snapshot); create --snapshot ID starts from one
  fork     <id> [--count N] [--timeout 5m]
           N sandboxes from one snapshot of it, on its host

Every command takes --json, --api-url URL and --api-key KEY.`;

function oneId(positionals: string[], verb: string): string {
  const id = positionals[0];
  if (!id) usageError(`sandbox ${verb} needs a sandbox id`, sandboxUsage);
  if (positionals.length > 1) usageError(`sandbox ${verb} takes one id, got ${positionals.length}`, sandboxUsage);
  return id;
}

function onTimeout(value: string | undefined): "kill" | "pause" | undefined {
  if (value === undefined || value === "kill" || value === "pause") return value;
  throw new CliError(`--on-timeout takes kill or pause, got "${value}"`, { exitCode: exitCodes.usage });
}

function describe(info: SandboxInfo): Array<[string, string]> {
  const fields: Array<[string, string]> = [
    ["id", info.id],
    ["state", info.stopReason ? `${info.state} (${info.stopReason})` : info.state],
    ["template", info.template],
    ["host", info.hostId ?? "-"],
    ["resources", `${info.vcpus} vCPU, ${info.memoryMb} MiB`],
    ["timeout", info.timeoutSec === 0 ? "none" : `${info.timeoutSec}s, then ${info.onTimeout}`],
    ["ends", info.endAt ? `${info.endAt} (${relativeTime(info.endAt)})` : "-"],
    ["created", info.createdAt],
  ];
  if (Object.keys(info.metadata).length > 0) {
    fields.push([
      "metadata",
      Object.entries(info.metadata)
        .map(([k, v]) => `${k}=${v}`)
        .join(", "),
    ]);
  }
  if (info.network) {
    const list = (entries: string[]) => (entries.length > 0 ? entries.join(", ") : "-");
    fields.push(["allow out", list(info.network.allowOut)], ["deny out", list(info.network.denyOut)]);
  }
  if (!info.internetAccess) fields.push(["internet", "off"]);
  if (info.error) fields.push(["error", info.error]);
  return fields;
}

/** `wrenn sandbox …` */
export async function sandboxCommand(ctx: CommandContext, args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  switch (verb) {
    case "create":
      return create(ctx, rest);
    case "list":
    case "ls":
      return list(ctx, rest);
    case "get":
    case "info":
      return get(ctx, rest);
    case "exec":
      return exec(ctx, rest);
    case "shell":
      // Loaded only here: the terminal's Connect client and protobuf are most of a quick command's start-up.
      return (await import("./shell.js")).shell(ctx, rest);
    case "cp":
      // Loaded on demand: its file streams are no part of the other verbs.
      return (await import("./cp.js")).copy(ctx, rest);
    case "run-code":
      return (await import("./run-code.js")).runCode(ctx, rest);
    case "pause":
    case "resume":
      return lifecycle(ctx, verb, rest);
    case "kill":
    case "rm":
      return kill(ctx, rest);
    case "timeout":
      return timeout(ctx, rest);
    case "network":
      return (await import("./network.js")).network(ctx, rest);
    case "connections":
      return (await import("./network.js")).connections(ctx, rest);
    case "metrics":
      return (await import("./telemetry.js")).metrics(ctx, rest);
    case "logs":
      return (await import("./telemetry.js")).logs(ctx, rest);
    case "history":
      return (await import("./history.js")).history(ctx, rest);
    case "fork":
      return (await import("./snapshot.js")).fork(ctx, rest);
    case "snapshot":
      return (await import("./snapshot.js")).snapshotCommand(ctx, ["create", ...rest]);
    case "help":
      ctx.output.out(sandboxUsage);
      return exitCodes.ok;
    case undefined:
      ctx.output.err(sandboxUsage);
      return exitCodes.usage;
    default:
      return usageError(`unknown sandbox command "${verb}"`, sandboxUsage);
  }
}

async function create(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    {
      ...commonOptions,
      template: { type: "string", short: "t" },
      snapshot: { type: "string" },
      vcpus: { type: "string" },
      memory: { type: "string" },
      timeout: { type: "string" },
      "on-timeout": { type: "string" },
      env: { type: "string", short: "e", multiple: true },
      metadata: { type: "string", short: "m", multiple: true },
      "no-internet": { type: "boolean", default: false },
      allow: { type: "string", multiple: true },
      deny: { type: "string", multiple: true },
      quiet: { type: "boolean", short: "q", default: false },
    },
    sandboxUsage,
  );
  if (values.help) return help(ctx);
  if (positionals.length > 0) usageError(`sandbox create takes no positional arguments`, sandboxUsage);
  const request: Parameters<typeof Sandbox.create>[0] = { ...(await connection(ctx, values)) };
  if (values.template) request.template = values.template;
  if (values.snapshot) request.snapshotId = values.snapshot;
  const vcpus = wholeNumber(values.vcpus, "--vcpus");
  if (vcpus !== undefined) request.vcpus = vcpus;
  const memory = wholeNumber(values.memory, "--memory");
  if (memory !== undefined) request.memoryMb = memory;
  const timeoutSec = durationSeconds(values.timeout, "--timeout");
  if (timeoutSec !== undefined) request.timeoutSec = timeoutSec;
  const action = onTimeout(values["on-timeout"]);
  if (action) request.onTimeout = action;
  if (values.env) request.envVars = keyValues(values.env, "--env");
  if (values.metadata) request.metadata = keyValues(values.metadata, "--metadata");
  if (values["no-internet"]) request.internetAccess = false;
  if (values.allow || values.deny) request.network = { allowOut: values.allow ?? [], denyOut: values.deny ?? [] };
  if (!values.quiet && !values.json)
    ctx.output.err(
      request.snapshotId
        ? `creating a sandbox from snapshot ${request.snapshotId}…`
        : `creating a sandbox from template ${request.template ?? "minimal"}…`,
    );
  const started = performance.now();
  const sandbox = await Sandbox.create(request);
  if (values.json) printJson(ctx.output, { ...sandbox.info, envdAccessToken: sandbox.envdAccessToken });
  else if (values.quiet) ctx.output.out(sandbox.id);
  else {
    ctx.output.out(sandbox.id);
    ctx.output.err(
      `running after ${((performance.now() - started) / 1000).toFixed(1)}s; try: wrenn sandbox exec ${sandbox.id} -- echo hello`,
    );
  }
  return exitCodes.ok;
}

async function list(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    {
      ...commonOptions,
      state: { type: "string", short: "s" },
      metadata: { type: "string", short: "m", multiple: true },
    },
    sandboxUsage,
  );
  if (values.help) return help(ctx);
  if (positionals.length > 0) usageError("sandbox list takes no positional arguments", sandboxUsage);
  const wanted =
    values.state === "all" ? [...sandboxStates] : (values.state?.split(",").map((s) => s.trim()) as SandboxState[]);
  const options: Parameters<typeof Sandbox.list>[0] = { ...(await connection(ctx, values)) };
  if (wanted) options.states = wanted;
  if (values.metadata) options.metadata = keyValues(values.metadata, "--metadata");
  const sandboxes = await Sandbox.list(options);
  if (values.json) {
    printJson(ctx.output, sandboxes);
    return exitCodes.ok;
  }
  const now = new Date();
  for (const line of renderTable(sandboxes, [
    { header: "id", value: (s) => s.id },
    { header: "state", value: (s) => s.state },
    { header: "template", value: (s) => s.template },
    { header: "cpu", value: (s) => String(s.vcpus) },
    { header: "mem", value: (s) => `${s.memoryMb}M` },
    { header: "created", value: (s) => relativeTime(s.createdAt, now) },
    { header: "ends", value: (s) => relativeTime(s.endAt, now) },
    {
      header: "metadata",
      value: (s) =>
        Object.entries(s.metadata)
          .map(([k, v]) => `${k}=${v}`)
          .join(","),
    },
  ]))
    ctx.output.out(line);
  return exitCodes.ok;
}

async function get(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(args, commonOptions, sandboxUsage);
  if (values.help) return help(ctx);
  const sandbox = await Sandbox.connect(oneId(positionals, "get"), await connection(ctx, values));
  if (values.json) printJson(ctx.output, sandbox.info);
  else for (const line of renderFields(describe(sandbox.info))) ctx.output.out(line);
  return exitCodes.ok;
}

async function exec(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    {
      ...commonOptions,
      cwd: { type: "string" },
      env: { type: "string", short: "e", multiple: true },
      user: { type: "string", short: "u" },
      timeout: { type: "string" },
    },
    sandboxUsage,
  );
  if (values.help) return help(ctx);
  const [id, ...command] = positionals;
  if (!id) usageError("sandbox exec needs a sandbox id and a command", sandboxUsage);
  if (command.length === 0) usageError("sandbox exec needs a command after the id, e.g. -- echo hello", sandboxUsage);
  // One word is a script as typed (pipes, $VARS); several are quoted so they run exactly as given.
  const script = command.length === 1 ? (command[0] ?? "") : command.map(shellQuote).join(" ");
  const sandbox = await Sandbox.connect(id, await connection(ctx, values));
  const options: Parameters<typeof sandbox.commands.stream>[1] = { signal: ctx.signal };
  if (values.cwd) options.cwd = values.cwd;
  if (values.env) options.envs = keyValues(values.env, "--env");
  if (values.user) options.user = values.user;
  const timeoutSec = durationSeconds(values.timeout, "--timeout");
  if (timeoutSec !== undefined) options.timeoutSec = timeoutSec;
  if (values.json) {
    const result = await sandbox.commands.run(script, options);
    printJson(ctx.output, result);
    return result.exitCode;
  }
  for await (const event of sandbox.commands.stream(script, options)) {
    if (event.type === "stdout") ctx.output.rawOut(event.data);
    else if (event.type === "stderr") ctx.output.rawErr(event.data);
    else if (event.type === "exit") {
      if (event.error) ctx.output.err(`wrenn: the command ended abnormally: ${event.error}`);
      return event.exitCode >= 0 ? event.exitCode : exitCodes.timedOut;
    }
  }
  return exitCodes.failure;
}

async function lifecycle(ctx: CommandContext, verb: "pause" | "resume", args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(args, { ...commonOptions, timeout: { type: "string" } }, sandboxUsage);
  if (values.help) return help(ctx);
  const sandbox = await Sandbox.connect(oneId(positionals, verb), await connection(ctx, values));
  if (!values.json) ctx.output.err(`${verb === "pause" ? "pausing" : "resuming"} ${sandbox.id}…`);
  const timeoutSec = durationSeconds(values.timeout, "--timeout");
  const info =
    verb === "pause" ? await sandbox.pause() : await sandbox.resume(timeoutSec === undefined ? {} : { timeoutSec });
  if (values.json) printJson(ctx.output, info);
  else ctx.output.out(`${info.id} ${info.state}`);
  return exitCodes.ok;
}

async function kill(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(args, commonOptions, sandboxUsage);
  if (values.help) return help(ctx);
  if (positionals.length === 0) usageError("sandbox kill needs at least one sandbox id", sandboxUsage);
  const conn = await connection(ctx, values);
  let failed = 0;
  let lastCode: number = exitCodes.ok;
  for (const id of positionals) {
    try {
      const sandbox = await Sandbox.connect(id, conn);
      await sandbox.kill();
      if (!values.json) ctx.output.out(`${id} killed`);
    } catch (err) {
      if (positionals.length === 1) throw err;
      failed += 1;
      lastCode = exitCodes.failure;
      ctx.output.err(`wrenn: ${id}: ${(err as Error).message}`);
    }
  }
  if (values.json) printJson(ctx.output, { killed: positionals.length - failed, failed });
  return lastCode;
}

async function timeout(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    { ...commonOptions, "on-timeout": { type: "string" } },
    sandboxUsage,
  );
  if (values.help) return help(ctx);
  const [id, duration] = positionals;
  if (!id || duration === undefined || positionals.length > 2) {
    usageError("sandbox timeout takes an id and a duration (0 removes the timeout)", sandboxUsage);
  }
  const seconds = durationSeconds(duration, "timeout") ?? 0;
  const sandbox = await Sandbox.connect(id, await connection(ctx, values));
  const action = onTimeout(values["on-timeout"]);
  const info = await sandbox.setTimeout(seconds, action ? { onTimeout: action } : {});
  if (values.json) printJson(ctx.output, info);
  else
    ctx.output.out(
      info.endAt
        ? `${info.id} ends ${info.endAt} (${relativeTime(info.endAt)}), then ${info.onTimeout}`
        : `${info.id} has no timeout`,
    );
  return exitCodes.ok;
}

function help(ctx: CommandContext): number {
  ctx.output.out(sandboxUsage);
  return exitCodes.ok;
}
