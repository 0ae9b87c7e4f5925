import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { TemplateBuilder } from "./builds/builder.js";
import { type AgentConfig, formatIpv4, loadAgentConfig } from "./config.js";
import { ConnectionLog } from "./egress/connection-log.js";
import { type EgressServices, startEgressServices } from "./egress/services.js";
import { EnvdClient } from "./envd-client.js";
import { createExec, type Exec } from "./exec.js";
import { HostInventory } from "./host-inventory.js";
import { createLogger, type Logger } from "./logger.js";
import { AgentMetrics } from "./metrics.js";
import { SlotManager, slotKindOf } from "./network/slots.js";
import { type FirecrackerConfinement, firecrackerConfinement } from "./runtimes/firecracker/confinement.js";
import { detectFirecracker } from "./runtimes/firecracker/detect.js";
import { FirecrackerRuntime } from "./runtimes/firecracker/runtime.js";
import { probeGvisor } from "./runtimes/gvisor/probe.js";
import { GvisorRuntime } from "./runtimes/gvisor/runtime.js";
import { NamespaceRuntime } from "./runtimes/namespace/runtime.js";
import { probeKvm, QemuRuntime } from "./runtimes/qemu/runtime.js";
import { selectRuntime } from "./runtimes/select.js";
import type { Runtime } from "./runtimes/types.js";
import { systemClock } from "./sandboxes/clock.js";
import { SandboxManager } from "./sandboxes/manager.js";
import { startServer } from "./server.js";
import { TelemetrySampler } from "./telemetry/sampler.js";
import { TelemetryStore } from "./telemetry/store.js";
import { startAgentTracing } from "./tracing.js";

/**
 * `wrenn-agent`: the composition root. Wires config, logger, exec, slots, the runtime, the manager and
 * the server by constructor injection. SIGTERM/SIGINT stop serving; sandboxes are left running (they
 * outlive the agent, and a restarted agent re-adopts them). Only DestroySandbox kills a sandbox.
 */

/** Reads the host token from AGENT_TOKEN, else from the token file, creating it (0600) on first start. */
async function loadToken(config: AgentConfig, logger: Logger): Promise<string> {
  if (config.token !== undefined) return config.token;
  const file = config.layout.tokenFile;
  const existing = await readFile(file, "utf8").catch(() => undefined);
  if (existing !== undefined && existing.trim().length >= 16) return existing.trim();
  const token = randomBytes(32).toString("hex");
  try {
    await writeFile(file, `${token}\n`, { mode: 0o600, flag: "wx" });
    logger.info("created host token", { file });
    return token;
  } catch (err) {
    // Another agent on the same root won the race: use its token.
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return (await readFile(file, "utf8")).trim();
    throw err;
  }
}

async function createRuntime(config: AgentConfig, exec: Exec, logger: Logger): Promise<Runtime> {
  const log = logger.child({ component: "runtime" });
  const cgroupGroup = `wrenn-${config.network.prefix}`;
  let firecrackerBin: string | undefined;
  let confinement: FirecrackerConfinement | undefined;
  let runscBin: string | undefined;
  const choice = await selectRuntime(config.runtime, {
    firecracker: async () => {
      const found = await detectFirecracker({
        exec,
        firecrackerBin: config.firecrackerBin,
        searchPath: config.searchPath,
      });
      if (!found.available) return found.reason;
      // The jailer is on by default; without its binary Firecracker is not usable (see confinement.ts).
      const confined = await firecrackerConfinement(config);
      if (!confined.ok) return confined.reason;
      firecrackerBin = found.firecrackerBin;
      confinement = confined.confinement;
      return undefined;
    },
    qemuKvm: () => probeKvm(exec),
    gvisor: async () => {
      const found = await probeGvisor({ exec, searchPath: config.searchPath });
      if (!found.available) return found.reason;
      runscBin = found.runscBin;
      return undefined;
    },
  });
  for (const { runtime, reason } of choice.skipped) log.info("runtime not usable here", { runtime, reason });
  if (choice.warning !== undefined) log.warn(choice.warning, { runtime: choice.runtime });
  switch (choice.runtime) {
    case "namespace":
      return new NamespaceRuntime({ exec, logger: log, cgroupGroup, diskQuotaMb: config.diskQuotaMb });
    case "gvisor":
      return new GvisorRuntime({
        exec,
        logger: log,
        cgroupGroup,
        runscBin,
        shimDir: join(config.layout.stateRoot, "gvisor"),
      });
    case "qemu":
      return QemuRuntime.create({ exec, logger: log, kvm: choice.kvm });
    case "firecracker":
      if (firecrackerBin === undefined) throw new Error("firecracker was selected without a binary");
      return new FirecrackerRuntime({ exec, logger: log, firecrackerBin, ...confinement });
  }
}

async function main(): Promise<void> {
  const config = loadAgentConfig();
  const logger = createLogger(config.logLevel).child({ component: "agent" });
  // RPC and envd spans to OTEL_EXPORTER_OTLP_ENDPOINT when set; otherwise traceparent only passes through.
  const tracing = startAgentTracing({ endpoint: config.otlpEndpoint });
  const exec = createExec(logger.child({ component: "exec" }));
  await Promise.all(
    [config.layout.sandboxesDir, config.layout.snapshotsDir].map((d) => mkdir(d, { recursive: true, mode: 0o700 })),
  );
  const token = await loadToken(config, logger);
  const runtime = await createRuntime(config, exec, logger);
  logger.info("runtime selected", { runtime: runtime.name, requested: config.runtime });
  const slots = new SlotManager({
    exec,
    logger: logger.child({ component: "slots" }),
    prefix: config.network.prefix,
    cidr: config.network.cidr,
    egress: config.egress,
    ports: {
      httpPort: config.egressServices.httpPort,
      tlsPort: config.egressServices.tlsPort,
      dnsPort: config.egressServices.dnsPort,
      mark: config.egressServices.mark,
      routeTable: config.egressServices.routeTable,
    },
    inspect: config.egressServices.inspect,
  });
  const metrics = new AgentMetrics();
  // Every sandbox's egress decisions (DNS questions, inspected 80/443 connections), read by the
  // ListConnections/WatchConnections handlers; kept 24 h after a sandbox ends.
  const connectionLog = new ConnectionLog({
    dir: config.layout.connectionsDir,
    logger: logger.child({ component: "connections" }),
  });
  const manager = new SandboxManager({
    config,
    logger,
    slots,
    runtime,
    envdClient: (address, accessToken) => new EnvdClient(address, accessToken, undefined, tracing.envd),
    clock: systemClock,
    observer: {
      createSeconds: (seconds) => metrics.createSeconds(seconds),
      sandboxEnded: (sandboxId) => {
        connectionLog
          .sandboxEnded(sandboxId)
          .catch((err: unknown) => logger.warn("could not mark a connection log ended", { sandboxId, err }));
      },
    },
    envdTimeoutMs: config.envdTimeoutMs,
  });
  await manager.recover();
  slots.warm(slotKindOf(runtime.name), config.slotPool);
  manager.startWarm(config.warmSandboxes);
  const inventory = new HostInventory(config.layout);
  const builds = new TemplateBuilder({
    layout: config.layout,
    exec,
    logger: logger.child({ component: "builds" }),
    manager,
    filesOnlySnapshots: runtime.saveFiles !== undefined,
    mirrors: config.buildMirrors,
    defaults: config.defaults,
  });
  await builds.load();
  const shutdown = new AbortController();
  // The resolver and proxy serve policy sandboxes; with AGENT_EGRESS off no sandbox reaches out at all.
  let egress: EgressServices | undefined;
  if (config.egress) {
    egress = await startEgressServices({
      config,
      exec,
      logger,
      targets: manager.egressTargets,
      log: connectionLog,
      relayDir: join(config.layout.stateRoot, "egress"),
      flows: {
        targets: manager.egressTargets,
        slotCidr: `${formatIpv4(config.network.cidr.base)}/${config.network.cidr.prefixLength}`,
      },
    });
  }
  connectionLog.startSweeper(shutdown.signal, (sandboxId) => {
    try {
      return manager.get(sandboxId).status !== "stopped";
    } catch {
      return false;
    }
  });
  // CPU, memory and disk of each running sandbox, and envd's process starts and ends, kept here until
  // the edge pulls them into Postgres (PullTelemetry): 30 minutes of samples per sandbox at most.
  const telemetryStore = new TelemetryStore({
    samplesPerSandbox: Math.min(3600, Math.max(60, Math.ceil(1_800_000 / config.metricsIntervalMs))),
    logsPerSandbox: 2000,
    keepAfterEndMs: 600_000,
  });
  const isLive = (sandboxId: string) => {
    try {
      return manager.get(sandboxId).status !== "stopped";
    } catch {
      return false;
    }
  };
  const sampler = new TelemetrySampler({
    store: telemetryStore,
    logger: logger.child({ component: "telemetry" }),
    intervalMs: config.metricsIntervalMs,
    running: () =>
      manager.list().sandboxes.flatMap((r) => {
        if (r.status !== "running") return [];
        try {
          const cgroups = (r.handle?.data as { cgroups?: { memory?: unknown } } | undefined)?.cgroups;
          return [
            {
              id: r.id,
              address: manager.proxyAddress(r.id),
              accessToken: r.accessToken,
              memoryCgroup: typeof cgroups?.memory === "string" ? cgroups.memory : undefined,
              createdAt: r.createdAt,
            },
          ];
        } catch {
          return [];
        }
      }),
    isLive,
  });
  const server = await startServer({
    config,
    logger,
    manager,
    inventory,
    metrics,
    token,
    tracing,
    connections: connectionLog,
    telemetry: { store: telemetryStore, sampler },
    builds,
  });
  sampler.start(shutdown.signal);
  manager.startReaper(shutdown.signal);

  const stop = (signal: string) => {
    if (shutdown.signal.aborted) return;
    logger.info("shutting down; sandboxes keep running", { signal });
    shutdown.abort();
    const force = setTimeout(() => process.exit(0), 10_000);
    force.unref();
    void Promise.all([
      server.close(),
      egress?.close() ?? connectionLog.flush(),
      manager.drainWarm().then(() => slots.drainPool()),
      tracing.shutdown(),
    ]).then(() => process.exit(0));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

main().catch((err: unknown) => {
  process.stderr.write(
    `${JSON.stringify({ time: new Date().toISOString(), level: "error", msg: "agent failed to start", err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) })}\n`,
  );
  process.exit(1);
});
