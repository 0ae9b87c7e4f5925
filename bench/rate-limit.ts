import { loadavg } from "node:os";
import pg from "pg";
import { createApp } from "../edge/app.js";
import type { App } from "../edge/context.js";
import { takeToken } from "../edge/services/rate-limit/take-token.js";
import { createEdgeHarness } from "../test/helpers/edge-app.js";
import { startPostgres } from "../test/helpers/postgres.js";
import { type Benchmark, type BenchRow, summarize, timeRuns } from "./stats.js";

/**
 * What the per-key rate limiter adds to a request: the same authenticated GET through two apps over
 * one database, one with the limiter on (a bucket too large to ever refuse) and one without,
 * interleaved so machine noise hits both alike; plus the bucket statement alone, and 32 requests in
 * flight on one key (they serialise on the bucket row). In process (`app.request`), so the figures
 * are the edge's own cost without HTTP.
 */
const N = 1500;
const WARMUP = 200;

async function interleaved(a: () => Promise<unknown>, b: () => Promise<unknown>) {
  const as: number[] = [];
  const bs: number[] = [];
  for (let i = 0; i < WARMUP; i++) {
    await a();
    await b();
  }
  for (let i = 0; i < N; i++) {
    let t0 = performance.now();
    await a();
    as.push(performance.now() - t0);
    t0 = performance.now();
    await b();
    bs.push(performance.now() - t0);
  }
  return { a: summarize(as), b: summarize(bs) };
}

async function throughput(app: App, path: string, key: string, seconds: number): Promise<number> {
  const until = performance.now() + seconds * 1000;
  let n = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (performance.now() < until) {
        const res = await app.request(path, { headers: { "x-api-key": key } });
        if (res.status !== 200) throw new Error(`unexpected ${res.status}`);
        await res.arrayBuffer();
        n++;
      }
    }),
  );
  return n / seconds;
}

/**
 * Upserts per second on ONE bucket row, logged vs unlogged table (why rate_limit_buckets is
 * UNLOGGED): concurrent requests of one key queue on the row for the length of the statement and
 * its commit, and a logged table's commit writes WAL.
 */
async function hotRow(rows: BenchRow[], url: string): Promise<void> {
  const pool = new pg.Pool({ connectionString: url, max: 32 });
  try {
    for (const kind of ["logged", "unlogged"] as const) {
      await pool.query("drop table if exists bench_bucket");
      await pool.query(
        `create ${kind === "unlogged" ? "unlogged " : ""}table bench_bucket (key_id text primary key, tokens float8 not null, refilled_at timestamptz not null)`,
      );
      const upsert =
        "insert into bench_bucket as b values ('k', 1e9, now()) on conflict (key_id) do update set tokens = b.tokens - 1, refilled_at = now() returning tokens";
      for (const inFlight of [1, 32]) {
        const until = performance.now() + 3000;
        let n = 0;
        await Promise.all(
          Array.from({ length: inFlight }, async () => {
            while (performance.now() < until) {
              await pool.query(upsert);
              n++;
            }
          }),
        );
        rows.push({
          name: `one bucket row, ${inFlight} in flight, ${kind} table (PostgreSQL)`,
          unit: "upserts/s",
          value: n / 3,
        });
      }
    }
    await pool.query("drop table if exists bench_bucket");
  } finally {
    await pool.end();
  }
}

async function measure(rows: BenchRow[], database: "pglite" | "postgres"): Promise<void> {
  const server = database === "postgres" ? await startPostgres() : undefined;
  const h = await createEdgeHarness(server ? { databaseUrl: server.url } : {});
  try {
    const team = await h.newTeam();
    const limited = createApp(h.appDeps({ ...h.config, rateLimit: { perSec: 1_000_000, burst: 1_000_000 } }));
    // The team's (empty) sandbox list: authentication plus one indexed read, no agent call.
    const path = "/v1/sandboxes";
    const get = (app: App) => async () => {
      const res = await app.request(path, { headers: { "x-api-key": team.key } });
      if (res.status !== 200) throw new Error(`unexpected ${res.status}`);
      await res.arrayBuffer();
    };
    const { a: off, b: on } = await interleaved(get(h.app), get(limited));
    const label = database === "pglite" ? "PGlite in process" : "PostgreSQL via node-postgres, loopback";
    rows.push({
      name: `GET /v1/sandboxes, limiter off (${label})`,
      unit: "ms",
      value: off.median,
      p95: off.p95,
      n: off.n,
    });
    rows.push({
      name: `GET /v1/sandboxes, limiter on (${label})`,
      unit: "ms",
      value: on.median,
      p95: on.p95,
      n: on.n,
      ratio: { value: on.median / off.median, against: "vs off" },
    });
    rows.push({ name: `added per request, p50 difference (${label})`, unit: "ms", value: on.median - off.median });
    const direct = summarize(
      await timeRuns(N, WARMUP, () => takeToken(h.database.db, team.keyId, { perSec: 1_000_000, burst: 1_000_000 })),
    );
    rows.push({
      name: `bucket statement alone (${label})`,
      unit: "ms",
      value: direct.median,
      p95: direct.p95,
      n: direct.n,
    });
    await throughput(h.app, path, team.key, 1);
    const offRate = await throughput(h.app, path, team.key, 3);
    const onRate = await throughput(limited, path, team.key, 3);
    rows.push({ name: `32 in flight on one key, limiter off (${label})`, unit: "req/s", value: offRate });
    rows.push({
      name: `32 in flight on one key, limiter on (${label})`,
      unit: "req/s",
      value: onRate,
      ratio: { value: onRate / offRate, against: "vs off" },
    });
    if (server) await hotRow(rows, server.url);
  } finally {
    await h.close();
    await server?.stop();
  }
}

export const benchmark: Benchmark = {
  name: "rate-limit",
  description: "cost of the per-key token bucket (one upsert per request) on PGlite and PostgreSQL",
  async run() {
    const rows: BenchRow[] = [];
    const notes = [
      `load average at start: ${loadavg()[0]?.toFixed(1)} on the machine's CPUs (other work skews every row).`,
    ];
    await measure(rows, "pglite");
    try {
      await measure(rows, "postgres");
    } catch (err) {
      notes.push(`PostgreSQL rows skipped: ${(err as Error).message}`);
    }
    notes.push(
      `latency rows: ${N} sequential requests each, interleaved off/on, after ${WARMUP} warm-up pairs; in process (app.request), no HTTP.`,
    );
    return { title: "Per-key rate limiter (bench/rate-limit.ts)", rows, notes };
  },
};
