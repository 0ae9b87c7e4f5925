import { loadavg } from "node:os";
import { type BenchStack, startBenchStack } from "./stack.js";
import { type Benchmark, type BenchRow, summarize } from "./stats.js";

/**
 * Many requests at once through the whole stack (edge on Node + PGlite, a real agent; needs root):
 * 50 creates → first exec fired together through REST, per runtime (namespace, gVisor), against the
 * same create alone in the same run; then 200 execs fired together across 20 of those sandboxes,
 * against one exec alone. Failures are counted, not thrown: the point is how many there are.
 *
 * Knobs: WRENN_BENCH_CONCURRENCY_CREATES (default 50), WRENN_BENCH_CONCURRENCY_EXECS (default 200),
 * WRENN_BENCH_CONCURRENCY_ROUNDS (default 1: bursts per runtime; p50/p95 are per burst, the row shows
 * the median burst with the min–max over bursts), WRENN_BENCH_CONCURRENCY_RUNTIMES (default
 * "namespace,gvisor").
 */

const TEMPLATE = process.env.WRENN_BENCH_TEMPLATE ?? "minimal";
const CREATES = Number(process.env.WRENN_BENCH_CONCURRENCY_CREATES ?? "50");
const EXECS = Number(process.env.WRENN_BENCH_CONCURRENCY_EXECS ?? "200");
const EXEC_SANDBOXES = 20;
const ROUNDS = Number(process.env.WRENN_BENCH_CONCURRENCY_ROUNDS ?? "1");
const RUNTIMES = (process.env.WRENN_BENCH_CONCURRENCY_RUNTIMES ?? "namespace,gvisor").split(",");
const ALONE = 5;
for (const [name, v] of [
  ["WRENN_BENCH_CONCURRENCY_CREATES", CREATES],
  ["WRENN_BENCH_CONCURRENCY_EXECS", EXECS],
  ["WRENN_BENCH_CONCURRENCY_ROUNDS", ROUNDS],
] as const) {
  if (!(Number.isInteger(v) && v > 0)) throw new Error(`${name} must be a positive whole number`);
}

const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(", ");

interface Outcome {
  ms: number;
  ok: boolean;
  error?: string;
  id?: string;
}

type Api = (method: string, path: string, json?: unknown) => Promise<Response>;

function restApi(stack: BenchStack): Api {
  return (method, path, json) =>
    fetch(`${stack.edge.url}${path}`, {
      method,
      headers: { "x-api-key": stack.adminKey, ...(json !== undefined ? { "content-type": "application/json" } : {}) },
      ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
    });
}

/**
 * Exec calls the edge refused with 429 RATE_LIMITED (it runs at most 16 unary execs per process and
 * refuses the rest at once, with retryAfterSec): the bench retries them after that delay, as a client
 * should, and counts them here.
 */
let refusals = 0;
const MAX_RETRIES = 30;

/** One exec through REST; resolves to an error text, or undefined when it printed `expect`. */
async function exec(api: Api, id: string, expect: string): Promise<string | undefined> {
  for (let attempt = 0; ; attempt++) {
    const res = await api("POST", `/v1/sandboxes/${id}/exec`, { cmd: "/bin/echo", args: [expect] });
    const text = await res.text();
    if (res.status === 429 && attempt < MAX_RETRIES) {
      refusals++;
      const after = (JSON.parse(text) as { error?: { details?: { retryAfterSec?: number } } }).error?.details
        ?.retryAfterSec;
      await new Promise((r) => setTimeout(r, (after ?? 1) * 1000));
      continue;
    }
    if (res.status !== 200) return `exec ${res.status}: ${text}`;
    const body = JSON.parse(text) as { exitCode?: number; stdout?: string };
    if (body.exitCode !== 0 || body.stdout?.trim() !== expect) return `exec answered ${text}`;
    return undefined;
  }
}

/** Create → first exec through REST, timed from the request to the exec's answer. */
async function createThenExec(api: Api): Promise<Outcome> {
  const t0 = performance.now();
  try {
    // 256 MiB so that 50 fit the host's memory capacity beside each other (the default is 512 MiB).
    const res = await api("POST", "/v1/sandboxes", { template: TEMPLATE, timeoutSec: 1800, memoryMb: 256 });
    const text = await res.text();
    if (res.status !== 201)
      return { ms: performance.now() - t0, ok: false, error: `create ${res.status}: ${text.slice(0, 200)}` };
    const id = (JSON.parse(text) as { id: string }).id;
    const failed = await exec(api, id, "first");
    return { ms: performance.now() - t0, ok: failed === undefined, id, ...(failed ? { error: failed } : {}) };
  } catch (err) {
    return { ms: performance.now() - t0, ok: false, error: (err as Error).message };
  }
}

async function timedExec(api: Api, id: string, i: number): Promise<Outcome> {
  const t0 = performance.now();
  try {
    const failed = await exec(api, id, `e${i}`);
    return { ms: performance.now() - t0, ok: failed === undefined, ...(failed ? { error: failed } : {}) };
  } catch (err) {
    return { ms: performance.now() - t0, ok: false, error: (err as Error).message };
  }
}

/** The distinct error texts (with counts), for the notes. */
function errorSummary(outcomes: Outcome[]): string {
  const counts = new Map<string, number>();
  for (const o of outcomes) {
    if (o.ok) continue;
    // Request ids differ per answer; without them equal errors count together.
    const e = (o.error ?? "?").replace(/"requestId":"[^"]*",?/g, "").slice(0, 300);
    counts.set(e, (counts.get(e) ?? 0) + 1);
  }
  return [...counts].map(([e, n]) => `${n}× ${e}`).join("; ");
}

/**
 * Where the burst's creates spent their time inside the agent: medians of the phases it logs with
 * "sandbox running" (queue for a start permit, network slot, runtime start, guest boot until envd
 * answers, envd /init), and of the whole create as the agent saw it.
 */
async function phaseBreakdown(stack: BenchStack, ids: Set<string>): Promise<string> {
  const phases = new Map<string, number[]>();
  for (const line of (await stack.agent.log()).split("\n")) {
    if (!line.includes('"msg":"sandbox running"')) continue;
    const entry = JSON.parse(line) as { sandboxId?: string; ms?: number; phases?: Record<string, number> };
    if (!entry.sandboxId || !ids.has(entry.sandboxId)) continue;
    for (const [k, v] of Object.entries({ ...entry.phases, agentTotalMs: entry.ms ?? Number.NaN })) {
      phases.set(k, [...(phases.get(k) ?? []), v]);
    }
  }
  return [...phases].map(([k, v]) => `${k} ${summarize(v).median.toFixed(0)}`).join(", ");
}

const range = (xs: number[]) => {
  const s = summarize(xs);
  return xs.length > 1 ? ` [bursts: min–max ${s.min.toFixed(0)}–${s.max.toFixed(0)}]` : "";
};

async function runscWorks(): Promise<boolean> {
  const { createExec } = await import("../agent/exec.js");
  const { createLogger } = await import("../agent/logger.js");
  const { probeGvisor } = await import("../agent/runtimes/gvisor/probe.js");
  const probe = await probeGvisor({ exec: createExec(createLogger("error")), searchPath: process.env.PATH ?? "" });
  return probe.available;
}

async function measureRuntime(runtime: "namespace" | "gvisor", notes: string[]): Promise<BenchRow[]> {
  const stack = await startBenchStack({
    agent: {
      runtime,
      namespaceOnly: true,
      env: {
        AGENT_SLOT_POOL: "2",
        AGENT_ENVD_TIMEOUT_MS: "180000",
        // Cold creates: no warm guests, so the burst measures boots, not hand-overs.
        AGENT_WARM_SANDBOXES: "0",
        // The default capacity overcommits 16 vCPUs per core (32 here): a burst of 50 one-vCPU sandboxes
        // on this 2-core host needs more. Capacity is a deployment's choice; this bench measures starts.
        AGENT_VCPUS: String(Math.max(64, CREATES + 8)),
      },
    },
  });
  const api = restApi(stack);
  const rows: BenchRow[] = [];
  const label = `${runtime}`;
  try {
    // The admin team's default quotas (20 running sandboxes) would refuse most of the burst.
    const team = (await (await api("GET", "/v1/teams/me")).json()) as { id: string };
    const patched = await api("PATCH", `/v1/teams/${team.id}`, {
      quotas: { maxRunningSandboxes: 10_000, maxVcpus: 100_000, maxMemoryMb: 100_000_000 },
    });
    if (patched.status !== 200) throw new Error(`raising the team's quotas: ${patched.status} ${await patched.text()}`);
    // The same create alone first, in the same run: the burst's ratio is against this.
    const alone: number[] = [];
    for (let i = 0; i < ALONE; i++) {
      const o = await createThenExec(api);
      if (!o.ok || !o.id) throw new Error(`${runtime}: a create alone failed: ${o.error}`);
      alone.push(o.ms);
      await (await api("DELETE", `/v1/sandboxes/${o.id}`)).arrayBuffer();
    }
    const aloneMedian = summarize(alone).median;
    rows.push({
      name: `${label}: create → first exec, alone (same run)`,
      unit: "ms",
      value: aloneMedian,
      p95: summarize(alone).p95,
      n: ALONE,
    });

    const p50s: number[] = [];
    const p95s: number[] = [];
    const spreads: number[] = [];
    const wallMs: number[] = [];
    let failures = 0;
    const execP50s: number[] = [];
    const execP95s: number[] = [];
    let execFailures = 0;
    let execRefusals = 0;
    const execAlone: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const loadBefore = load();
      const refusedBefore = refusals;
      const t0 = performance.now();
      const outcomes = await Promise.all(Array.from({ length: CREATES }, () => createThenExec(api)));
      wallMs.push(performance.now() - t0);
      const ok = outcomes.filter((o) => o.ok);
      failures += CREATES - ok.length;
      const s = summarize(ok.map((o) => o.ms));
      p50s.push(s.median);
      p95s.push(s.p95);
      spreads.push(s.p95 / s.median);
      if (ok.length < CREATES) notes.push(`${runtime} burst ${round + 1}: ${errorSummary(outcomes)}`);
      notes.push(
        `${runtime} burst ${round + 1}: load average before ${loadBefore}, after ${load()}; ${refusals - refusedBefore} first execs were refused with 429 (more than 16 execs at the edge at once) and retried after retryAfterSec, which their times include.`,
      );
      notes.push(
        `${runtime} burst ${round + 1}, the agent's phases (median ms): ${await phaseBreakdown(stack, new Set(ok.map((o) => o.id as string)))}; the rest of a create → first exec is the edge and the first exec.`,
      );

      // Execs across 20 of the burst's sandboxes: one alone each first, then all at once.
      const ids = ok.map((o) => o.id as string).slice(0, EXEC_SANDBOXES);
      if (ids.length > 0) {
        for (let i = 0; i < ALONE * 2; i++) {
          const o = await timedExec(api, ids[i % ids.length] as string, i);
          if (o.ok) execAlone.push(o.ms);
        }
        const refusalsAtStart = refusals;
        const execs = await Promise.all(
          Array.from({ length: EXECS }, (_, i) => timedExec(api, ids[i % ids.length] as string, i)),
        );
        execRefusals += refusals - refusalsAtStart;
        const execOk = execs.filter((o) => o.ok);
        execFailures += EXECS - execOk.length;
        const es = summarize(execOk.map((o) => o.ms));
        execP50s.push(es.median);
        execP95s.push(es.p95);
        if (execOk.length < EXECS) notes.push(`${runtime} execs, burst ${round + 1}: ${errorSummary(execs)}`);
      }
      await Promise.all(
        outcomes
          .filter((o) => o.id)
          .map(async (o) => (await api("DELETE", `/v1/sandboxes/${o.id}`)).arrayBuffer().catch(() => {})),
      );
    }
    const p50 = summarize(p50s).median;
    rows.push(
      {
        name: `${label}: ${CREATES} creates at once — failures (of ${CREATES * ROUNDS})`,
        unit: "",
        value: failures,
        goal: "0",
      },
      {
        name: `${label}: ${CREATES} creates at once, create → first exec p50${range(p50s)}`,
        unit: "ms",
        value: p50,
        p95: summarize(p95s).median,
        n: CREATES * ROUNDS,
        ratio: { value: p50 / aloneMedian, against: "alone" },
      },
      {
        name: `${label}: ${CREATES} creates at once, p95 / p50${range(spreads)}`,
        unit: "×",
        value: summarize(spreads).median,
        goal: "≤ 3",
      },
      {
        name: `${label}: ${CREATES} creates at once, whole burst (wall)${range(wallMs)}`,
        unit: "ms",
        value: summarize(wallMs).median,
      },
    );
    const aloneExec = summarize(execAlone).median;
    rows.push(
      {
        name: `${label}: one exec alone (same run)`,
        unit: "ms",
        value: aloneExec,
        p95: summarize(execAlone).p95,
        n: execAlone.length,
      },
      {
        name: `${label}: ${EXECS} execs at once across ${EXEC_SANDBOXES} sandboxes — failures (of ${EXECS * ROUNDS})`,
        unit: "",
        value: execFailures,
        goal: "0",
      },
      {
        name: `${label}: ${EXECS} execs at once — refused by the edge with 429 and retried after retryAfterSec`,
        unit: "",
        value: execRefusals,
      },
      {
        name: `${label}: ${EXECS} execs at once, p50 (retries included)${range(execP50s)}`,
        unit: "ms",
        value: summarize(execP50s).median,
        p95: summarize(execP95s).median,
        n: EXECS * ROUNDS,
        ratio: { value: summarize(execP50s).median / aloneExec, against: "alone" },
      },
    );
  } finally {
    await stack.close();
  }
  return rows;
}

export const benchmark: Benchmark = {
  name: "concurrency",
  description: `${CREATES} concurrent creates → first exec and ${EXECS} concurrent execs through REST, per runtime`,
  async run() {
    const rows: BenchRow[] = [];
    const notes: string[] = [
      `Load average at the start: ${load()}. Figures are provisional while the machine is shared.`,
      `Template ${TEMPLATE}, 256 MiB and 1 vCPU per sandbox, no warm guests (AGENT_WARM_SANDBOXES=0), spare network slots on (AGENT_SLOT_POOL=2), the agent's default of ${4} concurrent starts; AGENT_VCPUS raised so the burst fits the agent's CPU capacity. Each create is timed from POST /v1/sandboxes to the answer of its first POST …/exec; the alone rows are the same requests one at a time, in the same run. p95/p50 of a burst is inside that burst; with several bursts (WRENN_BENCH_CONCURRENCY_ROUNDS) the row shows the median burst.`,
    ];
    for (const runtime of RUNTIMES) {
      if (runtime !== "namespace" && runtime !== "gvisor") throw new Error(`unknown runtime ${runtime}`);
      if (runtime === "gvisor" && !(await runscWorks())) {
        notes.push("gvisor skipped: runsc missing or its probe sandbox did not start");
        continue;
      }
      rows.push(...(await measureRuntime(runtime, notes)));
    }
    notes.push(`Load average at the end: ${load()}.`);
    return { title: "Concurrency: creates and execs at once", rows, notes };
  },
};
