import { cpus } from "node:os";
import { loadOptionsFromEnv, type MixedLoadResult, opKinds, quantiles, runMixedLoad } from "./load-driver.js";
import { type Benchmark, type BenchReport, type BenchRow, renderReport } from "./stats.js";

/**
 * `npm run bench -- load`: the mixed load of issue 15 (bench/load-driver.ts) on a real stack, 60 s and
 * 20 clients unless WRENN_LOAD_SECONDS / WRENN_LOAD_CLIENTS say otherwise. Prints p50/p95/p99 per kind
 * of operation, the outcomes by code, and the crash and row checks; fails (non-zero exit) when anything
 * crashed, a row was lost or left behind, or normal traffic got a 5xx.
 */

const fmtMs = (x: number) => (Number.isNaN(x) ? "–" : x >= 100 ? x.toFixed(0) : x.toFixed(1));

/** The report of one run: latency rows per kind (p50 as the value, p95, and p99 as its own row), then the verdict rows. */
export function loadReport(result: MixedLoadResult): BenchReport {
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  for (const kind of opKinds) {
    const stats = result.ops[kind];
    const q = quantiles(stats.latencies);
    rows.push({ name: `${kind}: latency p50`, unit: "ms", value: q.p50, p95: q.p95, n: stats.latencies.length });
    rows.push({ name: `  ${kind}: latency p99`, unit: "ms", value: q.p99, n: stats.latencies.length });
    const outcomes = Object.entries(stats.outcomes)
      .sort((a, b) => b[1] - a[1])
      .map(([label, n]) => `${label} ×${n}`)
      .join(", ");
    notes.push(
      `${kind}: ${stats.latencies.length} done, ${stats.ok} as expected; min–max ${fmtMs(q.min)}–${fmtMs(q.max)} ms; outcomes: ${outcomes || "none"}.`,
    );
  }
  const total = opKinds.reduce((sum, k) => sum + result.ops[k].latencies.length, 0);
  rows.push({ name: "operations per second (all kinds)", unit: "op/s", value: total / result.elapsedSec, n: total });
  rows.push({ name: "unexpected 5xx", unit: "", value: result.unexpected5xx, goal: "0" });
  rows.push({
    name: "other failures of normal traffic (4xx, transport, timeouts, wrong bytes)",
    unit: "",
    value: result.otherFailures,
  });
  rows.push({ name: "crashes (edge, agent, envd)", unit: "", value: result.crashes.length, goal: "0" });
  rows.push({ name: "lost or orphaned rows", unit: "", value: result.lostRows.length, goal: "0" });
  const o = result.options;
  const a = result.accounting;
  notes.push(
    `${o.clients} clients for ${o.seconds} s (${result.elapsedSec.toFixed(1)} s until the last operation ended) on a ${o.runtime} agent, edge on Node + PostgreSQL as separate processes, rate limiter off; ${o.workSandboxes} long-lived work sandboxes (exec, 64 KiB upload then download, 256 KiB GET through the proxy from python's http.server), create→exec→kill churn with at most ${o.maxLiveChurn} churn sandboxes at once, and one hostile sandbox hit by two dedicated loops plus 10% of each client's operations.`,
    "Hostile answers allowed: 502 SANDBOX_BAD_RESPONSE (or SANDBOX_UNREACHABLE when the guest resets before answering), a relayed 200 whose body is then cut (broken chunking, short or reset body), and the client's own 8 s timeout for slowloris; anything else counts as unexpected.",
    `Hostile answers by path: ${Object.entries(result.hostileByPath)
      .sort(([x], [y]) => x.localeCompare(y))
      .map(
        ([path, labels]) =>
          `${path} → ${Object.entries(labels)
            .map(([label, n]) => `${label} ×${n}`)
            .join(", ")}`,
      )
      .join("; ")}.`,
    `Rows: ${a.created} creates answered 201, ${a.killed} kills answered 204, ${a.rows} rows for the team; after the final sweep ${a.activeRowsAfter} active rows and ${a.runtimeSandboxesAfter} runtime sandboxes remain. Sweep: ${JSON.stringify(a.sweep ?? "did not run")}.`,
    `Edge log: ${result.edgeErrorLines} error-level lines, ${result.edgeRawLines.length} lines outside the JSON log.`,
    `Load average (1/5/15 min) before ${result.loadAvgBefore.map((x) => x.toFixed(2)).join("/")}, after ${result.loadAvgAfter.map((x) => x.toFixed(2)).join("/")} on ${cpus().length} cores; the machine is shared with other sessions, so latencies are an upper bound for this hardware.`,
  );
  for (const crash of result.crashes) notes.push(`CRASH: ${crash}`);
  for (const lost of result.lostRows.slice(0, 20)) notes.push(`ROW: ${lost}`);
  for (const sample of result.samples.slice(0, 20)) notes.push(`unexpected: ${sample}`);
  for (const line of result.edgeRawLines.slice(0, 5)) notes.push(`edge raw output: ${line.slice(0, 200)}`);
  return { title: "Mixed load with a hostile guest (issue 15)", rows, notes };
}

/** Why a run fails the bench, or an empty list. */
export function loadVerdict(result: MixedLoadResult): string[] {
  const failures: string[] = [];
  if (result.crashes.length > 0) failures.push(`${result.crashes.length} crash(es)`);
  if (result.lostRows.length > 0) failures.push(`${result.lostRows.length} lost or orphaned row(s)`);
  if (result.unexpected5xx > 0) failures.push(`${result.unexpected5xx} unexpected 5xx`);
  return failures;
}

export const benchmark: Benchmark = {
  name: "load",
  description:
    "mixed load (60 s, 20 clients; WRENN_LOAD_SECONDS, WRENN_LOAD_CLIENTS) while a hostile guest answers garbage: p99s, crashes, lost rows",
  async run() {
    const result = await runMixedLoad(loadOptionsFromEnv());
    const report = loadReport(result);
    const failures = loadVerdict(result);
    if (failures.length > 0) {
      // main.ts prints only the error of a failed bench; the figures are printed here first.
      console.log(renderReport(report));
      throw new Error(`mixed load failed: ${failures.join(", ")}`);
    }
    return report;
  },
};
