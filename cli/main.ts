import { loadEnvironment } from "./config.js";
import type { CommandContext } from "./context.js";
import { exitCodes, reportError } from "./errors.js";
import { type Output, processOutput } from "./output.js";

/** Top-level help. */
export const usage = `wrenn: self-hosted sandboxes

usage: wrenn <command> [options]

  up                      run everything on this machine (API, database, local agent)
  doctor                  check that this host can run Wrenn (one line per check, with fixes)
  agent                   run a host agent (--register API_URL --token-file FILE to join an API)
  image build|list        build or list guest images
  sandbox <command>       create, list, get, exec, shell, cp, pause, resume, kill, timeout, fork
  snapshot <command>      create, list, get, delete snapshots of sandboxes
  template <command>      build, list, logs, delete templates (docs/templates.md)
  hosts [command]         list, register, drain, activate, delete host agents (admin)
  keys [command]          list, create, revoke API keys
  webhooks [command]      list, create, update, delete webhooks; deliveries, redeliver
  teams [command]         show a team's quotas and usage; set limits and isolation (admin)

Every API command takes --json, --api-url URL (WRENN_API_URL) and --api-key KEY (WRENN_API_KEY);
both may also come from ~/.config/wrenn/config.json ({"apiUrl": …, "apiKey": …}).
Run \`wrenn <command> --help\` for a command's options; \`wrenn --version\` prints the CLI's version
and the API's.`;

// Commands are loaded on demand: `up` pulls in the whole edge, which a quick `sandbox list` should not pay for.

/** Runs the CLI with arguments (without `node` and the script) and returns the exit code. */
export async function runCli(argv: string[], output: Output, signal: AbortSignal): Promise<number> {
  try {
    const env = loadEnvironment();
    const ctx: CommandContext = { env, output, signal };
    const [command, ...rest] = argv;
    switch (command) {
      case "up":
        return await (await import("./commands/up.js")).upCommand(ctx, rest);
      case "doctor":
        return await (await import("./commands/doctor.js")).doctorCommand(ctx, rest);
      case "version":
      case "--version":
      case "-v":
        return await (await import("./commands/version.js")).versionCommand(ctx, rest);
      case "agent":
        return await (await import("./commands/agent.js")).agentCommand(ctx, rest);
      case "image":
      case "images":
        return await (await import("./commands/image.js")).imageCommand(ctx, rest);
      case "snapshot":
      case "snapshots":
        return await (await import("./commands/snapshot.js")).snapshotCommand(ctx, rest);
      case "template":
      case "templates":
        return await (await import("./commands/template.js")).templateCommand(ctx, rest);
      case "sandbox":
      case "sandboxes":
      case "sbx":
        return await (await import("./commands/sandbox.js")).sandboxCommand(ctx, rest);
      case "hosts":
      case "host":
        return await (await import("./commands/hosts.js")).hostsCommand(ctx, rest);
      case "keys":
      case "key":
      case "api-keys":
        return await (await import("./commands/keys.js")).keysCommand(ctx, rest);
      case "webhooks":
      case "webhook":
        return await (await import("./commands/webhooks.js")).webhooksCommand(ctx, rest);
      case "teams":
      case "team":
        return await (await import("./commands/teams.js")).teamsCommand(ctx, rest);
      case "help":
      case "--help":
      case "-h":
        output.out(usage);
        return exitCodes.ok;
      case undefined:
        output.err(usage);
        return exitCodes.usage;
      default:
        output.err(`wrenn: unknown command "${command}"\n\n${usage}`);
        return exitCodes.usage;
    }
  } catch (err) {
    return reportError(err, output.err);
  }
}

async function main(): Promise<void> {
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupts += 1;
    // A second Ctrl-C while shutting down means "now".
    if (interrupts > 1) process.exit(130);
    controller.abort(new Error(`received ${signal}`));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const code = await runCli(process.argv.slice(2), processOutput, controller.signal);
  process.exitCode = code;
  // Flush what is buffered, then leave even if a handle (a keep-alive socket) lingers.
  process.stdout.write("", () => process.stderr.write("", () => process.exit(code)));
}

await main();
