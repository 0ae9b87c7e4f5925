import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import { type Database, schema } from "../edge/db/client.js";
import { hosts, sandboxes, teams } from "../edge/db/schema/index.js";
import { noopLogger } from "../edge/logger.js";
import { openNodeDatabase } from "../edge/node/database.js";
import { createServiceDeps, type ServiceContext, serviceContext } from "../edge/services/context.js";
import { newSandboxId } from "../edge/services/ids.js";
import type { ReconcileOptions } from "../edge/services/reconcile/options.js";
import { type ReconcileSummary, runReconcileSweep } from "../edge/services/reconcile/sweep.js";
import { startPostgres } from "../test/helpers/postgres.js";
import { type Benchmark, type BenchRow, summarize } from "./stats.js";

/**
 * One reconcile sweep over 10,000 sandboxes on 20 hosts. The hosts are real HostAgentService
 * servers on loopback (connect-node) reporting synthetic sandboxes; the edge side is the production
 * sweep (connect-web client, drizzle over node-postgres) against a real PostgreSQL server. Two
 * shapes: everything already converged (the steady state every sweep pays for), and 5 % drift per
 * host (sandboxes gone from the host, past end_at, orphans) that the sweep must fix. Statements are
 * counted with drizzle's query logger.
 */

const HOSTS = 20;
const PER_HOST = 500;
const ROUNDS = 5;
const options: Partial<ReconcileOptions> = { orphanGraceMs: 0, hostConcurrency: 8, actionConcurrency: 8 };

/** The child process running the hosts (bench/reconcile-fleet.ts), and the sandbox ids of each host. */
interface Fleet {
  child: ChildProcess;
  ids: string[][];
  request(command: {
    type: string;
    ids?: string[][];
  }): Promise<{ type: string; agents?: { url: string; token: string }[] }>;
}

function startFleet(ids: string[][]): Fleet {
  const child = fork(fileURLToPath(new URL("./reconcile-fleet.ts", import.meta.url)), [], {
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const request: Fleet["request"] = (command) =>
    new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`agent fleet exited with ${code}`));
      child.once("exit", onExit);
      child.once("message", (message) => {
        child.off("exit", onExit);
        resolve(message as { type: string; agents?: { url: string; token: string }[] });
      });
      child.send(command);
    });
  return { child, ids, request };
}

async function seedFleet(db: Database, ctx: ServiceContext, teamId: string): Promise<Fleet> {
  const ids = Array.from({ length: HOSTS }, () => Array.from({ length: PER_HOST }, () => newSandboxId()));
  const fleet = startFleet(ids);
  const started = await fleet.request({ type: "start", ids });
  const agents = started.agents ?? [];
  for (let h = 0; h < HOSTS; h++) {
    const agent = agents[h];
    if (!agent) throw new Error("the agent fleet started too few agents");
    const hostId = `host_bench${h.toString().padStart(8, "0")}`;
    await db.insert(hosts).values({
      id: hostId,
      address: agent.url,
      tokenSealed: await ctx.secrets.seal(agent.token),
      capacityVcpus: 10_000,
      capacityMemoryMb: 10_000_000,
      capacityMaxSandboxes: 10_000,
    });
    await db.insert(sandboxes).values(
      (ids[h] ?? []).map((id) => ({
        id,
        teamId,
        hostId,
        template: "minimal",
        state: "running" as const,
        vcpus: 1,
        memoryMb: 256,
        timeoutSec: 3600,
        endAt: new Date(Date.now() + 3_600_000),
        envdTokenSealed: "bench",
      })),
    );
  }
  return fleet;
}

/** Puts every row back to running and every host back to reporting all its sandboxes. */
async function converge(db: Database, fleet: Fleet): Promise<void> {
  await db
    .update(sandboxes)
    .set({ state: "running", stopReason: null, endAt: new Date(Date.now() + 3_600_000), stoppedAt: null });
  await fleet.request({ type: "converge" });
}

/** 5 % drift per host: 10 gone from the host, 10 past end_at, 5 orphans the database never knew. */
async function drift(db: Database, fleet: Fleet): Promise<number> {
  await fleet.request({ type: "drift" });
  const expired = fleet.ids.flatMap((ids) => ids.slice(10, 20));
  await db
    .update(sandboxes)
    .set({ endAt: new Date(Date.now() - 1000) })
    .where(sql`${sandboxes.id} in (select jsonb_array_elements_text(${JSON.stringify(expired)}::jsonb))`);
  return fleet.ids.length * 25;
}

const cpuMs = (usage: NodeJS.CpuUsage) => (usage.user + usage.system) / 1000;

function changedTotal(summary: ReconcileSummary): number {
  return Object.values(summary.changed).reduce((a, b) => a + b, 0);
}

export const benchmark: Benchmark = {
  name: "reconcile",
  description: `reconcile sweep: ${HOSTS * PER_HOST} sandboxes on ${HOSTS} loopback HostAgentService servers, PostgreSQL`,
  async run() {
    const server = await startPostgres();
    let fleet: Fleet | undefined;
    const pool = new pg.Pool({ connectionString: server.url, max: 10 });
    try {
      const migrated = await openNodeDatabase({ databaseUrl: server.url });
      await migrated.close();
      let statements = 0;
      const db: Database = drizzle({ client: pool, schema, logger: { logQuery: () => void statements++ } });
      const deps = await createServiceDeps({
        encryptionKey: randomBytes(32).toString("hex"),
        config: { maxUploadBytes: 1024, maxJsonBytes: 1024 },
        logger: noopLogger,
      });
      const ctx = serviceContext(deps, { db, requestId: "bench" });
      await db.insert(teams).values({ id: "team_bench", name: "bench" });
      fleet = await seedFleet(db, ctx, "team_bench");

      const steadyMs: number[] = [];
      const steadyStatements: number[] = [];
      const driftMs: number[] = [];
      const driftStatements: number[] = [];
      const steadyCpuMs: number[] = [];
      const driftCpuMs: number[] = [];
      let expectedChanges = 0;
      let lastDrift: ReconcileSummary | undefined;
      await converge(db, fleet);
      await runReconcileSweep(ctx, options); // warm-up: connections, JIT
      for (let round = 0; round < ROUNDS; round++) {
        await converge(db, fleet);
        statements = 0;
        const t0 = performance.now();
        const c0 = process.cpuUsage();
        const steady = await runReconcileSweep(ctx, options);
        steadyMs.push(performance.now() - t0);
        steadyCpuMs.push(cpuMs(process.cpuUsage(c0)));
        steadyStatements.push(statements);
        if (changedTotal(steady) !== 0 || steady.hostsSeen !== HOSTS) {
          throw new Error(`steady sweep changed something: ${JSON.stringify(steady)}`);
        }

        expectedChanges = await drift(db, fleet);
        statements = 0;
        const t1 = performance.now();
        const c1 = process.cpuUsage();
        lastDrift = await runReconcileSweep(ctx, options);
        driftMs.push(performance.now() - t1);
        driftCpuMs.push(cpuMs(process.cpuUsage(c1)));
        driftStatements.push(statements);
      }
      const steady = summarize(steadyMs);
      const drifted = summarize(driftMs);
      const perHost = (n: number[]) => summarize(n.map((x) => (x - 3) / HOSTS)).median;
      const rows: BenchRow[] = [
        {
          name: `sweep, ${HOSTS * PER_HOST} sandboxes converged`,
          unit: "ms",
          value: steady.median,
          p95: steady.p95,
          n: steady.n,
          goal: "≤ 2000 ms",
        },
        {
          name: `sweep, 5 % drift (${expectedChanges} changes)`,
          unit: "ms",
          value: drifted.median,
          p95: drifted.p95,
          n: drifted.n,
          goal: "≤ 2000 ms",
        },
        {
          name: "edge CPU time of one sweep, converged",
          unit: "ms",
          value: summarize(steadyCpuMs).median,
          p95: summarize(steadyCpuMs).p95,
          n: steadyCpuMs.length,
        },
        {
          name: "edge CPU time of one sweep, 5 % drift",
          unit: "ms",
          value: summarize(driftCpuMs).median,
          p95: summarize(driftCpuMs).p95,
          n: driftCpuMs.length,
        },
        {
          name: "DB statements per host, converged",
          unit: "statements",
          value: perHost(steadyStatements),
          goal: "O(1)",
        },
        {
          name: "DB statements per host, 5 % drift",
          unit: "statements",
          value: perHost(driftStatements),
          goal: "O(1)",
        },
        {
          name: "DB statements per sweep (lease, hosts, release)",
          unit: "statements",
          value: 3,
        },
      ];
      return {
        title: "Reconcile sweep",
        rows,
        notes: [
          `${HOSTS} hosts × ${PER_HOST} sandboxes; hosts swept ${options.hostConcurrency} at a time, ${options.actionConcurrency} agent calls per host; the agents run in one child process, PostgreSQL 15 via node-postgres (pool of 10), all on loopback.`,
          `Statements per host are counted with drizzle's logger, minus the sweep's own 3 (lease, host list, lease release), divided by ${HOSTS}; they do not grow with sandboxes per host.`,
          `Load average when it ran: ${loadavg()
            .map((l) => l.toFixed(1))
            .join(
              ", ",
            )} on ${cpus().length} cores; wall times on a busy machine include waiting for the CPU, the CPU rows do not.`,
          `Last drift sweep: ${JSON.stringify(lastDrift?.changed)}, destroyed on hosts ${lastDrift?.destroyedOnHost}.`,
        ],
      };
    } finally {
      if (fleet) {
        const exited = new Promise((resolve) => fleet?.child.once("exit", resolve));
        fleet.child.send({ type: "stop" });
        await exited;
      }
      await pool.end();
      await server.stop();
    }
  },
};
