import { spawn } from "node:child_process";
import { access, readdir, readFile } from "node:fs/promises";
import { freemem, loadavg } from "node:os";
import { join } from "node:path";
import { IMAGES_ROOT } from "../test/helpers/agent-fixtures.js";
import { type AgentProcess, freeSlotRange, startAgentProcess } from "../test/helpers/agent-process.js";
import { type Benchmark, type BenchRow, summarize } from "./stats.js";

/**
 * What an idle sandbox costs the host, and how many idle sandboxes one host holds.
 *
 * Per runtime (namespace, gVisor): N sandboxes are created and left idle; then for each, the PSS of
 * every process in its memory cgroup (/proc/<pid>/smaps_rollup: shared pages, e.g. the template's
 * files and node's code, are split among their users), plus the kernel memory charged to that cgroup
 * (memory.kmem.usage_in_bytes on cgroup v1, memory.stat "kernel" on v2), plus the agent's bookkeeping
 * (the agent process's PSS growth over the N creates, divided by N). The host's MemAvailable drop per
 * sandbox is shown beside it as a cross-check (noisy while other work runs on the machine).
 *
 * Then, namespace only: sandboxes are added in steps, and after each step every sandbox runs one exec;
 * the ramp stops at the first step where an exec takes over 1 s or a create fails, or at the cap.
 *
 * Knobs: WRENN_BENCH_DENSITY_SAMPLE (default 5: sandboxes per runtime for the per-sandbox cost),
 * WRENN_BENCH_DENSITY_MAX (default 300: the ramp's cap), WRENN_BENCH_DENSITY_STEP (default: a tenth of
 * the cap, at least 5), WRENN_BENCH_DENSITY_RUNTIMES (default "namespace,gvisor,qemu"; QEMU runs under TCG
 * here and has no cgroup of its own: its figure is the PSS of the QEMU process and its children).
 */

const TEMPLATE = process.env.WRENN_BENCH_TEMPLATE ?? "minimal";
const SAMPLE = Number(process.env.WRENN_BENCH_DENSITY_SAMPLE ?? "5");
const CAP = Number(process.env.WRENN_BENCH_DENSITY_MAX ?? "300");
const STEP = Number(process.env.WRENN_BENCH_DENSITY_STEP ?? String(Math.max(5, Math.round(CAP / 10))));
const RUNTIMES = (process.env.WRENN_BENCH_DENSITY_RUNTIMES ?? "namespace,gvisor,qemu").split(",");
for (const [name, v] of [
  ["WRENN_BENCH_DENSITY_SAMPLE", SAMPLE],
  ["WRENN_BENCH_DENSITY_MAX", CAP],
  ["WRENN_BENCH_DENSITY_STEP", STEP],
] as const) {
  if (!(Number.isInteger(v) && v > 0)) throw new Error(`${name} must be a positive whole number`);
}
/** Memory each sandbox asks for: idle sandboxes use a fraction of it; capacity is raised to match. */
const SANDBOX_MEMORY_MB = 256;
/** How long sandboxes sit idle before they are measured (envd's start-up garbage settles). */
const SETTLE_MS = 5_000;
const EXEC_LIMIT_MS = 1_000;
const MiB = 2 ** 20;

const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(", ");

/** A field of /proc/<pid>/smaps_rollup in bytes (0 if the process is gone). */
async function rollup(pid: number, field: string): Promise<number> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8").catch(() => "");
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return m?.[1] ? Number(m[1]) * 1024 : 0;
}

/** PSS of one process in bytes (0 if it is gone). */
const pss = (pid: number) => rollup(pid, "Pss");

/** Every process in a cgroup directory and the cgroups under it. */
async function cgroupPids(dir: string): Promise<number[]> {
  const own = (await readFile(join(dir, "cgroup.procs"), "utf8").catch(() => ""))
    .split("\n")
    .filter(Boolean)
    .map(Number);
  const subdirs = (await readdir(dir, { withFileTypes: true }).catch(() => [])).filter((d) => d.isDirectory());
  const nested = await Promise.all(subdirs.map((d) => cgroupPids(join(dir, d.name))));
  return [...own, ...nested.flat()];
}

/** Kernel memory charged to a memory cgroup (v1: kmem usage; v2: memory.stat "kernel"). */
async function cgroupKernelBytes(dir: string): Promise<number> {
  const v1 = await readFile(join(dir, "memory.kmem.usage_in_bytes"), "utf8").catch(() => undefined);
  if (v1 !== undefined) return Number(v1.trim());
  const stat = await readFile(join(dir, "memory.stat"), "utf8").catch(() => "");
  const m = /^kernel (\d+)$/m.exec(stat);
  return m?.[1] ? Number(m[1]) : Number.NaN;
}

/** Everything charged to a memory cgroup: anonymous memory, page cache and (v1) kernel memory. */
async function cgroupChargedBytes(dir: string): Promise<number> {
  const v1 = await readFile(join(dir, "memory.usage_in_bytes"), "utf8").catch(() => undefined);
  if (v1 !== undefined) return Number(v1.trim());
  return Number((await readFile(join(dir, "memory.current"), "utf8").catch(() => "NaN")).trim());
}

interface GuestState {
  handle?: { pid?: number; data?: { cgroups?: { memory?: string } } };
}

/**
 * Where the sandbox's processes are, from its state file: its memory cgroup (namespace, gVisor), or
 * for a VM (QEMU, which has no cgroup of its own) its process and that process's descendants.
 */
async function guestProcesses(agent: AgentProcess, sandboxId: string): Promise<{ cgroup?: string; pids: number[] }> {
  const state = JSON.parse(
    await readFile(join(agent.stateDir, "sandboxes", sandboxId, "state.json"), "utf8"),
  ) as GuestState;
  const cgroup = state.handle?.data?.cgroups?.memory;
  if (cgroup) return { cgroup, pids: await cgroupPids(cgroup) };
  const root = state.handle?.pid;
  if (!root) throw new Error(`no cgroup and no process in the state of ${sandboxId}`);
  const parents = new Map<number, number>();
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    // The parent's PID is the second field after the command's closing parenthesis.
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (ppid) parents.set(Number(name), ppid);
  }
  const pids = [root];
  for (let i = 0; i < pids.length; i++) {
    for (const [pid, ppid] of parents) if (ppid === pids[i]) pids.push(pid);
  }
  return { pids };
}

interface SandboxCost {
  pss: number;
  kernel: number;
  charged: number;
  processes: number;
  /** Per process: its name (comm), PSS and private dirty bytes (what it alone holds). */
  each: { name: string; pss: number; privateDirty: number }[];
}

async function sandboxCost(agent: AgentProcess, sandboxId: string): Promise<SandboxCost> {
  const { cgroup: dir, pids } = await guestProcesses(agent, sandboxId);
  const each = await Promise.all(
    pids.map(async (pid) => ({
      name: (await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "?")).trim(),
      pss: await pss(pid),
      privateDirty: await rollup(pid, "Private_Dirty"),
    })),
  );
  return {
    pss: each.reduce((a, b) => a + b.pss, 0),
    kernel: dir ? await cgroupKernelBytes(dir) : Number.NaN,
    charged: dir ? await cgroupChargedBytes(dir) : Number.NaN,
    processes: pids.length,
    each,
  };
}

/** "name PSS (private dirty)" per process name, medians over the sandboxes, largest first. */
function breakdown(costs: SandboxCost[]): string {
  const byName = new Map<string, { pss: number[]; dirty: number[] }>();
  for (const c of costs) {
    const sums = new Map<string, { pss: number; dirty: number }>();
    for (const p of c.each) {
      const s = sums.get(p.name) ?? { pss: 0, dirty: 0 };
      sums.set(p.name, { pss: s.pss + p.pss, dirty: s.dirty + p.privateDirty });
    }
    for (const [name, s] of sums) {
      const e = byName.get(name) ?? { pss: [], dirty: [] };
      e.pss.push(s.pss);
      e.dirty.push(s.dirty);
      byName.set(name, e);
    }
  }
  return [...byName]
    .map(([name, e]) => ({ name, pss: summarize(e.pss).median, dirty: summarize(e.dirty).median }))
    .sort((a, b) => b.pss - a.pss)
    .map((e) => `${e.name} ${mib(e.pss).toFixed(1)} MiB (private dirty ${mib(e.dirty).toFixed(1)})`)
    .join(", ");
}

/** IPv4 networks routed on this host (/proc/net/route), to pick a free slot range. */
async function routed(): Promise<{ base: number; mask: number }[]> {
  const text = await readFile("/proc/net/route", "utf8").catch(() => "");
  const swap = (hex: string) => {
    const n = Number.parseInt(hex, 16);
    return (((n & 255) << 24) | (((n >>> 8) & 255) << 16) | (((n >>> 16) & 255) << 8) | (n >>> 24)) >>> 0;
  };
  return text
    .split("\n")
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length > 7)
    .map((f) => ({ base: swap(f[1] ?? "0"), mask: swap(f[7] ?? "0") }))
    .filter((r) => r.mask !== 0);
}

/** A slot range with room for `count` sandboxes (one /30 each) that overlaps nothing routed here. */
async function slotRange(count: number): Promise<string> {
  if (count <= 120) return freeSlotRange();
  const prefix = 32 - Math.ceil(Math.log2((count + 8) * 4));
  const mask = (0xffffffff << (32 - prefix)) >>> 0;
  const routes = await routed();
  for (let attempt = 0; attempt < 200; attempt++) {
    const base =
      (((10 << 24) | ((128 + Math.floor(Math.random() * 120)) << 16)) + Math.floor(Math.random() * 65536)) & mask;
    const clash = routes.some((r) => {
      const common = (r.mask & mask) >>> 0;
      return (r.base & common) >>> 0 === (base & common) >>> 0;
    });
    if (!clash) return `${[base >>> 24, (base >>> 16) & 255, (base >>> 8) & 255, base & 255].join(".")}/${prefix}`;
  }
  throw new Error(`no free /${prefix} for ${count} sandboxes`);
}

function newId(tag: string, i: number): string {
  return `dn${tag}${Date.now().toString(36)}${i.toString(36)}`.padEnd(20, "0").slice(0, 20);
}

async function startAgent(runtime: string, sandboxes: number): Promise<AgentProcess> {
  return startAgentProcess({
    runtime: runtime as "namespace" | "gvisor" | "qemu",
    namespaceOnly: true,
    rootDir: IMAGES_ROOT,
    netCidr: await slotRange(sandboxes),
    env: {
      AGENT_ENVD_TIMEOUT_MS: "120000",
      AGENT_WARM_SANDBOXES: "0",
      // Idle sandboxes: capacity (count, vCPUs, memory) raised so that only the host itself limits.
      AGENT_MAX_SANDBOXES: String(sandboxes + 8),
      AGENT_VCPUS: String((sandboxes + 8) * 2),
      AGENT_MEMORY_MB: String((sandboxes + 8) * SANDBOX_MEMORY_MB),
    },
  });
}

async function create(agent: AgentProcess, id: string): Promise<void> {
  await agent.client.createSandbox({ sandboxId: id, template: TEMPLATE, memoryMb: SANDBOX_MEMORY_MB });
}

async function execMs(agent: AgentProcess, id: string): Promise<number> {
  const t0 = performance.now();
  const r = await agent.client.exec({ sandboxId: id, cmd: "/bin/true", timeoutSec: 30 });
  if (r.exitCode !== 0) throw new Error(`exec in ${id} exited ${r.exitCode}`);
  return performance.now() - t0;
}

const mib = (bytes: number) => bytes / MiB;
const spread = (xs: number[]) => {
  const s = summarize(xs);
  return `[min–max ${s.min.toFixed(1)}–${s.max.toFixed(1)}]`;
};

async function perSandbox(runtime: string, notes: string[]): Promise<BenchRow[]> {
  const agent = await startAgent(runtime, SAMPLE);
  try {
    await new Promise((r) => setTimeout(r, 2_000));
    const agentBefore = await pss(agent.pid);
    const availBefore = freemem();
    const ids: string[] = [];
    for (let i = 0; i < SAMPLE; i++) {
      const id = newId(runtime.slice(0, 2), i);
      await create(agent, id);
      await execMs(agent, id);
      ids.push(id);
    }
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const costs = await Promise.all(ids.map((id) => sandboxCost(agent, id)));
    const agentShare = Math.max(0, (await pss(agent.pid)) - agentBefore) / SAMPLE;
    const availDrop = (availBefore - freemem()) / SAMPLE;
    const total = costs.map((c) => mib(c.pss + (Number.isNaN(c.kernel) ? 0 : c.kernel) + agentShare));
    const label = `${runtime}: one idle sandbox`;
    const floor = runtime === "namespace" ? mib(await bareNodePss()) : undefined;
    notes.push(
      `${runtime}: ${SAMPLE} idle sandboxes, ${summarize(costs.map((c) => c.processes)).median} processes each; PSS by process: ${breakdown(costs)}; load average ${load()}.`,
    );
    return [
      {
        name: `${label}, total (PSS + kernel + agent share) ${spread(total)}`,
        unit: "MiB",
        value: summarize(total).median,
        n: SAMPLE,
        goal: runtime === "namespace" ? "≤ 20 MiB" : undefined,
        ...(floor !== undefined
          ? { ratio: { value: summarize(total).median / floor, against: "an idle bare node" } }
          : {}),
      },
      ...(floor !== undefined
        ? [
            {
              name: "floor: PSS of an idle bare node process (same run; envd is a Node program)",
              unit: "MiB",
              value: floor,
            },
          ]
        : []),
      {
        name: `${label}: PSS of its processes ${spread(costs.map((c) => mib(c.pss)))}`,
        unit: "MiB",
        value: summarize(costs.map((c) => mib(c.pss))).median,
        n: SAMPLE,
      },
      {
        name: `${label}: kernel memory of its cgroup ${spread(costs.map((c) => mib(c.kernel)))}`,
        unit: "MiB",
        value: summarize(costs.map((c) => mib(c.kernel))).median,
        n: SAMPLE,
      },
      { name: `${label}: agent's PSS growth / ${SAMPLE}`, unit: "MiB", value: mib(agentShare) },
      {
        name: `${label}: all its cgroup is charged (RSS + page cache + kernel), for reference ${spread(costs.map((c) => mib(c.charged)))}`,
        unit: "MiB",
        value: summarize(costs.map((c) => mib(c.charged))).median,
        n: SAMPLE,
      },
      {
        name: `${label}: host MemAvailable drop / ${SAMPLE} (cross-check; noisy on a shared host)`,
        unit: "MiB",
        value: mib(availDrop),
      },
    ];
  } finally {
    await agent.stop();
  }
}

/**
 * The floor of a namespace sandbox's memory: an idle bare Node process (envd is a Node program) on this
 * host, started and measured the same way, in the same run.
 */
async function bareNodePss(): Promise<number> {
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  try {
    await new Promise((r) => setTimeout(r, 2_000));
    return await pss(child.pid ?? 0);
  } finally {
    child.kill("SIGKILL");
  }
}

async function ramp(notes: string[]): Promise<BenchRow[]> {
  const agent = await startAgent("namespace", CAP);
  const ids: string[] = [];
  let stoppedBy = `the cap (WRENN_BENCH_DENSITY_MAX=${CAP})`;
  let held = 0;
  let lastExec: number[] = [];
  const availBefore = freemem();
  let availAtHeld = availBefore;
  try {
    while (ids.length < CAP) {
      const want = Math.min(STEP, CAP - ids.length);
      const batch = Array.from({ length: want }, (_, i) => newId("r", ids.length + i));
      // Four at a time: the agent's default of concurrent starts.
      let failure: string | undefined;
      for (let i = 0; i < batch.length && !failure; i += 4) {
        const results = await Promise.allSettled(
          batch.slice(i, i + 4).map(async (id) => {
            await create(agent, id);
            ids.push(id);
          }),
        );
        const bad = results.find((r) => r.status === "rejected");
        if (bad) failure = String((bad as PromiseRejectedResult).reason?.message ?? bad);
      }
      if (failure) {
        stoppedBy = `a create failed at ${ids.length + 1}: ${failure.slice(0, 200)}`;
        break;
      }
      await new Promise((r) => setTimeout(r, 1_000));
      const times: number[] = [];
      for (const id of ids) times.push(await execMs(agent, id).catch(() => Number.POSITIVE_INFINITY));
      const worst = Math.max(...times);
      notes.push(
        `ramp: ${ids.length} idle sandboxes, exec p50 ${summarize(times).median.toFixed(0)} ms, max ${worst.toFixed(0)} ms, MemAvailable ${(freemem() / 2 ** 30).toFixed(1)} GiB, load average ${load()}.`,
      );
      if (worst > EXEC_LIMIT_MS) {
        stoppedBy = `an exec took ${worst.toFixed(0)} ms with ${ids.length} sandboxes`;
        break;
      }
      held = ids.length;
      lastExec = times;
      availAtHeld = freemem();
    }
  } finally {
    await agent.stop();
  }
  notes.push(`ramp stopped by ${stoppedBy}.`);
  const s = summarize(lastExec);
  return [
    {
      name: `namespace: idle sandboxes held, each answering an exec within 1 s (cap ${CAP})`,
      unit: "",
      value: held,
      goal: "≥ 300",
    },
    {
      name: `namespace: exec round trip with ${held} idle sandboxes (max ${s.max.toFixed(0)} ms)`,
      unit: "ms",
      value: s.median,
      p95: s.p95,
      n: s.n,
    },
    {
      name: `namespace: host MemAvailable drop / sandbox at ${held} (noisy on a shared host)`,
      unit: "MiB",
      value: held > 0 ? mib((availBefore - availAtHeld) / held) : Number.NaN,
    },
  ];
}

async function runscWorks(): Promise<boolean> {
  const { createExec } = await import("../agent/exec.js");
  const { createLogger } = await import("../agent/logger.js");
  const { probeGvisor } = await import("../agent/runtimes/gvisor/probe.js");
  const probe = await probeGvisor({ exec: createExec(createLogger("error")), searchPath: process.env.PATH ?? "" });
  return probe.available;
}

export const benchmark: Benchmark = {
  name: "density",
  description: "memory per idle sandbox per runtime, and how many idle namespace sandboxes one host holds",
  async run() {
    const rows: BenchRow[] = [];
    const notes: string[] = [
      `Load average at the start: ${load()}; host MemAvailable ${(freemem() / 2 ** 30).toFixed(1)} GiB. Provisional while the machine is shared: the ramp's real run (WRENN_BENCH_DENSITY_MAX=300) needs a quiet machine.`,
      `Template ${TEMPLATE}; sandboxes of ${SANDBOX_MEMORY_MB} MiB and 1 vCPU, measured after ${SETTLE_MS / 1000} s idle. PSS splits shared pages (template files, node's code) among the processes that map them, so N sandboxes together cost N × the PSS figure. Kernel memory outside a sandbox's cgroup (its netns, veth, nftables set entries, mount structures) is not in the figure; the MemAvailable rows include it, and everything else happening on the host.`,
    ];
    for (const runtime of RUNTIMES) {
      if (runtime === "gvisor" && !(await runscWorks())) {
        notes.push("gvisor skipped: runsc missing or its probe sandbox did not start");
        continue;
      }
      if (runtime === "qemu") {
        const image = join(IMAGES_ROOT, "images", TEMPLATE, "rootfs.ext4");
        const kernel = join(IMAGES_ROOT, "kernels", "current", "vmlinux");
        const have = await Promise.all(
          [image, kernel].map((f) =>
            access(f).then(
              () => true,
              () => false,
            ),
          ),
        );
        if (!have.every(Boolean)) {
          notes.push("qemu skipped: no rootfs.ext4 or kernel in the images root");
          continue;
        }
      } else if (runtime !== "namespace" && runtime !== "gvisor") {
        throw new Error(`unknown runtime ${runtime}`);
      }
      try {
        rows.push(...(await perSandbox(runtime, notes)));
      } catch (err) {
        // QEMU under TCG on a loaded host may not boot within the agent's envd timeout: say so, and go on.
        if (runtime !== "qemu") throw err;
        notes.push(`qemu not measured: ${(err as Error).message.slice(0, 300)}`);
      }
    }
    if (RUNTIMES.includes("namespace")) rows.push(...(await ramp(notes)));
    notes.push(`Load average at the end: ${load()}.`);
    return { title: "Density: idle sandboxes per host", rows, notes };
  },
};
