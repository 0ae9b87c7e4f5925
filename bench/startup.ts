import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  type RunningStack,
  repoRoot,
  type StackEnvironment,
  stackEnvironment,
  stackUnavailable,
  startStack,
} from "../test/helpers/cli-stack.js";
import { type Benchmark, type BenchReport, type BenchRow, summarize } from "./stats.js";

/**
 * `npm start` as the README's quickstart runs it: from spawning `npm start` to the first 200 from
 * `/health`, and to the line "Wrenn is ready at …" (the agent started and registered). Each run has a
 * new data directory (a first start, as in the quickstart test), so it includes making the database;
 * one more row starts on an existing data directory, and one empties the database template cache
 * first (a machine's very first start). Needs root and the built guest image.
 */

const runs = 5;
const restartRuns = 3;
const execFileAsync = promisify(execFile);

interface StartTiming {
  healthMs: number;
  readyMs: number;
}

/** Starts `npm start` in `stack`, timing /health and the ready line; leaves it running in `holder`. */
async function timeStart(stack: StackEnvironment, holder: { running?: RunningStack }): Promise<StartTiming> {
  const started = performance.now();
  let healthMs: number | undefined;
  let polling = true;
  const poll = (async () => {
    while (polling && healthMs === undefined) {
      const ok = await fetch(`http://127.0.0.1:${stack.port}/health`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) healthMs = performance.now() - started;
      else await new Promise((r) => setTimeout(r, 20));
    }
  })();
  try {
    holder.running = await startStack(stack, { command: "npm", args: ["start", "--silent"] });
  } finally {
    polling = false;
    await poll;
  }
  const readyMs = performance.now() - started;
  if (healthMs === undefined) throw new Error("wrenn up was ready but /health never answered");
  return { healthMs, readyMs };
}

/** One start on a new data directory (optionally with its own, empty template cache), stopped after. */
async function freshStart(options: { cacheDir?: string } = {}): Promise<StartTiming> {
  const stack = await stackEnvironment({ adminKey: false });
  if (options.cacheDir) stack.env.WRENN_CACHE_DIR = options.cacheDir;
  const holder: { running?: RunningStack } = {};
  try {
    return await timeStart(stack, holder);
  } finally {
    await holder.running?.stop();
    await stack.cleanup();
  }
}

/** Node's own start-up with tsx: the floor under anything `npm start` does. */
async function bareTsxStart(): Promise<number> {
  const started = performance.now();
  await execFileAsync(process.execPath, ["--import", "tsx", "-e", ""], { cwd: repoRoot });
  return performance.now() - started;
}

export const benchmark: Benchmark = {
  name: "startup",
  description: "npm start → /health and → ready (new data dir; existing data dir; first start on a machine)",
  async run(): Promise<BenchReport> {
    const unavailable = await stackUnavailable();
    if (unavailable) return { title: "npm start", rows: [], notes: [`Skipped: ${unavailable}.`] };
    const loadBefore = loadavg()[0] ?? 0;
    const rows: BenchRow[] = [];

    const bare: number[] = [];
    for (let i = 0; i < runs; i++) bare.push(await bareTsxStart());
    const bareSummary = summarize(bare);

    // Warm-up: makes the template cache and the tsx transform cache, as any earlier start would.
    await freshStart();
    const fresh: StartTiming[] = [];
    for (let i = 0; i < runs; i++) fresh.push(await freshStart());
    const health = summarize(fresh.map((t) => t.healthMs));
    const ready = summarize(fresh.map((t) => t.readyMs));

    // A restart: the data directory exists, so the database only opens.
    const stack = await stackEnvironment({ adminKey: false });
    const restarts: StartTiming[] = [];
    try {
      for (let i = 0; i < restartRuns + 1; i++) {
        const holder: { running?: RunningStack } = {};
        try {
          const timing = await timeStart(stack, holder);
          if (i > 0) restarts.push(timing);
        } finally {
          await holder.running?.stop();
        }
      }
    } finally {
      await stack.cleanup();
    }
    const restartHealth = summarize(restarts.map((t) => t.healthMs));

    // A machine's first start: no template yet, so initdb runs (in a worker) while /health answers.
    const cacheRoot = await mkdtemp(join(tmpdir(), "wrenn-bench-cache-"));
    let first: StartTiming;
    try {
      first = await freshStart({ cacheDir: join(cacheRoot, "cache") });
    } finally {
      await rm(cacheRoot, { recursive: true, force: true });
    }

    rows.push({
      name: "node --import tsx -e '' (floor)",
      unit: "ms",
      value: bareSummary.median,
      p95: bareSummary.p95,
      n: bareSummary.n,
    });
    rows.push({
      name: "npm start → /health 200 (new data dir)",
      unit: "ms",
      value: health.median,
      p95: health.p95,
      n: health.n,
      ratio: { value: health.median / bareSummary.median, against: "the floor" },
      goal: "≤ 5000 quiet; ≤ 10000 (acceptance)",
    });
    rows.push({
      name: "npm start → Wrenn is ready (new data dir)",
      unit: "ms",
      value: ready.median,
      p95: ready.p95,
      n: ready.n,
    });
    rows.push({
      name: "npm start → /health 200 (existing data dir)",
      unit: "ms",
      value: restartHealth.median,
      p95: restartHealth.p95,
      n: restartHealth.n,
    });
    rows.push({
      name: "first start on a machine (no template) → /health 200",
      unit: "ms",
      value: first.healthMs,
      n: 1,
    });
    rows.push({ name: "first start on a machine (no template) → ready", unit: "ms", value: first.readyMs, n: 1 });
    const loadAfter = loadavg()[0] ?? 0;
    return {
      title: "npm start",
      rows,
      notes: [
        `1-minute load average ${loadBefore.toFixed(1)} before, ${loadAfter.toFixed(1)} after, on ${cpus().length} cores.`,
        "/health is polled every 20 ms; the ready line is seen within 100 ms (the stack helper's poll).",
        "Agent: namespace runtime, egress off; the guest image is already built (its build is not part of these times).",
      ],
    };
  },
};
