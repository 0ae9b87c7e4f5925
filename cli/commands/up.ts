import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { and, eq, inArray } from "drizzle-orm";
import { createAgentConnector } from "../../edge/clients/agent.js";
import { activeSandboxStates, sandboxes } from "../../edge/db/schema/index.js";
import { edgeConfigFrom, parseEnv } from "../../edge/env.js";
import { createConsoleLogger } from "../../edge/logger.js";
import { resolveEncryptionKey } from "../../edge/node/encryption-key.js";
import { type NodeEdge, startNodeEdge } from "../../edge/node.js";
import type { ServiceContext, TeamContext } from "../../edge/services/context.js";
import { createSecretBox } from "../../edge/services/crypto.js";
import { registerHost } from "../../edge/services/hosts/register.js";
import { destroySandbox } from "../../edge/services/sandboxes/destroy.js";
import { pauseSandbox } from "../../edge/services/sandboxes/pause.js";
import { ensureHostTools } from "../../rootfs/host.js";
import { Progress } from "../../rootfs/progress.js";
import { parseCommand, usageError } from "../args.js";
import type { CommandContext } from "../context.js";
import { CliError, exitCodes } from "../errors.js";
import { freePort, type LocalAgent, portIsFree, resolveAgentToken, startLocalAgent } from "../local-agent.js";
import { ensureImage } from "./image.js";

export const upUsage = `usage: wrenn up [--keep] [--port N] [--data-dir DIR] [--runtime auto|firecracker|qemu|namespace]

  Runs Wrenn on this machine (as root): builds the guest image if missing, starts the API with an
  embedded database, starts one local agent with the best runtime and registers it.
  Ctrl-C stops everything; sandboxes are destroyed, or paused with --keep.

Environment: WRENN_PORT (3000), WRENN_DATA_DIR (./.wrenn), WRENN_RUNTIME (auto), WRENN_ADMIN_API_KEY,
AGENT_FILES_ROOTDIR (/var/lib/wrenn), WRENN_AGENT_PORT, WRENN_LOG_LEVEL (warn).`;

/** The default template `up` makes sure is built. */
const defaultTemplate = "minimal";

/** What `up` remembers between runs in its data directory, so the agent keeps its address (and its host row). */
interface LocalState {
  agentPort: number;
}

async function readLocalState(file: string): Promise<LocalState | undefined> {
  try {
    const parsed: unknown = JSON.parse(await readFile(file, "utf8"));
    if (
      typeof parsed === "object" &&
      parsed !== null &&
      "agentPort" in parsed &&
      typeof parsed.agentPort === "number"
    ) {
      return { agentPort: parsed.agentPort };
    }
  } catch {
    // first run, or unreadable: choose again
  }
  return undefined;
}

/** The local agent's port: WRENN_AGENT_PORT, else the one used last time, else 5007 when free, else any free port. */
async function chooseAgentPort(configured: number | undefined, stateFile: string): Promise<number> {
  if (configured !== undefined) return configured;
  const previous = await readLocalState(stateFile);
  if (previous && (await portIsFree(previous.agentPort))) return previous.agentPort;
  const port = (await portIsFree(5007)) ? 5007 : await freePort();
  await writeFile(stateFile, `${JSON.stringify({ agentPort: port } satisfies LocalState)}\n`);
  return port;
}

/** The copy-paste example printed once the stack is up. */
export function quickstartExample(apiUrl: string, apiKey: string): string[] {
  return [
    "Try it:",
    "",
    `  export WRENN_API_URL=${apiUrl} WRENN_API_KEY=${apiKey}`,
    "  id=$(npx wrenn sandbox create -q)",
    '  npx wrenn sandbox exec "$id" -- echo hello',
    '  npx wrenn sandbox kill "$id"',
    "",
    "or with curl:",
    "",
    `  curl -s -X POST ${apiUrl}/v1/sandboxes -H "X-API-Key: $WRENN_API_KEY" -H 'content-type: application/json' -d '{}'`,
    `  curl -s -X POST ${apiUrl}/v1/sandboxes/<id>/exec -H "X-API-Key: $WRENN_API_KEY" -H 'content-type: application/json' -d '{"cmd":"echo hello"}'`,
    "",
  ];
}

/** `wrenn up` */
export async function upCommand(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    {
      keep: { type: "boolean", default: false },
      port: { type: "string" },
      "data-dir": { type: "string" },
      runtime: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    upUsage,
  );
  if (values.help) {
    ctx.output.out(upUsage);
    return exitCodes.ok;
  }
  if (positionals.length > 0) usageError("up takes no positional arguments", upUsage);
  const { env, output } = ctx;
  if (!env.isRoot) {
    throw new CliError("wrenn up needs root: sandboxes use network namespaces, cgroups and (with KVM) VMs", {
      exitCode: exitCodes.usage,
      hint: "run it as root, e.g. sudo npm start",
    });
  }
  const port = values.port === undefined ? env.port : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) usageError(`--port takes a port number`, upUsage);
  const dataDir = resolve(values["data-dir"] ?? env.dataDir);
  const runtime = values.runtime ?? env.runtime ?? env.raw.AGENT_RUNTIME ?? "auto";
  if (!["auto", "firecracker", "qemu", "namespace"].includes(runtime)) {
    usageError(`--runtime takes auto, firecracker, qemu or namespace, got "${runtime}"`, upUsage);
  }
  await mkdir(dataDir, { recursive: true, mode: 0o700 });

  // 1. Host packages, then the guest image (both are no-ops once done).
  await ensureHostTools(new Progress(1, (line) => output.err(line)), ctx.signal);
  await ensureImage(ctx, defaultTemplate);
  if (ctx.signal.aborted) return 130;

  // 2. The edge, in this process, on PGlite under the data directory (or DATABASE_URL).
  const parsed = parseEnv({
    ...env.raw,
    WRENN_PORT: String(port),
    WRENN_DATA_DIR: dataDir,
    WRENN_LOG_LEVEL: env.logLevel ?? "warn",
  });
  if (!parsed.ok) {
    throw new CliError(
      `invalid environment: ${Object.entries(parsed.errors)
        .map(([k, v]) => `${k}: ${v}`)
        .join("; ")}`,
      { exitCode: exitCodes.usage },
    );
  }
  const edgeEnv = parsed.env;
  const logger = createConsoleLogger(edgeEnv.WRENN_LOG_LEVEL);
  output.err(`starting the API on port ${port} (data in ${dataDir})…`);
  let edge: NodeEdge;
  try {
    edge = await startNodeEdge(edgeEnv, logger);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") {
      throw new CliError(`port ${port} is already in use`, {
        exitCode: exitCodes.usage,
        hint: "stop what uses it (another `wrenn up`?) or pick another port with WRENN_PORT",
      });
    }
    throw err;
  }
  const { key } = await resolveEncryptionKey({
    configured: edgeEnv.WRENN_ENCRYPTION_KEY,
    dataDir: edgeEnv.DATABASE_URL ? undefined : dataDir,
  });
  const services: ServiceContext = {
    db: edge.database.db,
    agents: createAgentConnector(),
    secrets: await createSecretBox(key),
    logger,
    requestId: "wrenn-up",
    config: edgeConfigFrom(edgeEnv),
    now: () => new Date(),
  };

  // 3. One local agent as a child, registered as a host.
  let agent: LocalAgent | undefined;
  let hostId: string | undefined;
  const stopAll = async (keep: boolean) => {
    if (hostId) await settleSandboxes(services, hostId, keep, (line) => output.err(line));
    await agent?.stop();
    await edge.close();
  };
  try {
    const agentPort = await chooseAgentPort(env.agentPort, join(dataDir, "local-agent.json"));
    const token = await resolveAgentToken(env);
    const logFile = join(dataDir, "agent.log");
    output.err(`starting the local agent (runtime ${runtime}) on 127.0.0.1:${agentPort}; log: ${logFile}`);
    agent = await startLocalAgent({ env, host: "127.0.0.1", port: agentPort, token, runtime, logFile });
    output.err(`local agent ready (pid ${agent.pid})`);
    const { host } = await registerHost(services, { address: agent.url, token });
    hostId = host.id;
    output.err(
      `registered host ${host.id} (${host.runtime}, ${host.capacity.vcpus} vCPU, ${host.capacity.memoryMb} MiB)`,
    );
  } catch (err) {
    await stopAll(false).catch(() => {});
    throw err;
  }

  // 4. The key and the example, then the ready line.
  const apiUrl = `http://localhost:${edge.port}`;
  output.out("");
  if (edge.generatedAdminKey) {
    output.out("Admin API key (shown once; store it now):");
    output.out("");
    output.out(`  ${edge.generatedAdminKey}`);
    output.out("");
    for (const line of quickstartExample(apiUrl, edge.generatedAdminKey)) output.out(line);
  } else if (edgeEnv.WRENN_ADMIN_API_KEY) {
    output.out("Admin API key: the one in WRENN_ADMIN_API_KEY.");
    output.out("");
    for (const line of quickstartExample(apiUrl, "$WRENN_ADMIN_API_KEY")) output.out(line);
  } else {
    output.out("Use the admin API key printed on the first start (or set WRENN_ADMIN_API_KEY to install a new one).");
    output.out("");
  }
  output.out(`Wrenn is ready at ${apiUrl}`);

  // 5. Run until Ctrl-C / SIGTERM or until the agent dies.
  const agentExit = agent.exited;
  const reason = await Promise.race([
    new Promise<"signal">((resolveSignal) => {
      if (ctx.signal.aborted) resolveSignal("signal");
      ctx.signal.addEventListener("abort", () => resolveSignal("signal"), { once: true });
    }),
    agentExit.then(() => "agent" as const),
  ]);
  if (reason === "agent") {
    output.err(`wrenn: the local agent exited (code ${await agentExit}); stopping. See ${join(dataDir, "agent.log")}`);
    await edge.close();
    return exitCodes.failure;
  }
  output.err(values.keep ? "stopping; pausing sandboxes (--keep)…" : "stopping; destroying sandboxes…");
  await stopAll(values.keep);
  output.err("stopped");
  return exitCodes.ok;
}

/**
 * Destroys (or, with `keep`, pauses) every sandbox the database places on the local host, through
 * the same services the API uses, so the database stays true. Each runs on behalf of its own team.
 */
async function settleSandboxes(
  services: ServiceContext,
  hostId: string,
  keep: boolean,
  log: (line: string) => void,
): Promise<void> {
  const rows = await services.db
    .select({ id: sandboxes.id, teamId: sandboxes.teamId, state: sandboxes.state })
    .from(sandboxes)
    .where(and(eq(sandboxes.hostId, hostId), inArray(sandboxes.state, [...activeSandboxStates])));
  await Promise.all(
    rows.map(async (row) => {
      const ctx: TeamContext = { ...services, principal: { teamId: row.teamId, keyId: "wrenn-up", isAdmin: true } };
      try {
        if (keep) {
          if (row.state === "running") {
            await pauseSandbox(ctx, row.id);
            log(`  paused ${row.id}`);
          }
        } else {
          await destroySandbox(ctx, row.id);
          log(`  destroyed ${row.id}`);
        }
      } catch (err) {
        log(`  ${row.id}: ${(err as Error).message}`);
      }
    }),
  );
}
