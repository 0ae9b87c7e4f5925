import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { access, mkdir, mkdtemp, readFile, realpath, rm } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { EnvdClient } from "../agent/envd-client.js";
import {
  cgroupDirs,
  createCgroups,
  detectCgroupLayout,
  killAndRemoveCgroups,
  type SandboxCgroups,
  sandboxCgroups,
} from "../agent/runtimes/namespace/cgroups.js";
import { type AgentProcess, freeSlotRange, startAgentProcess } from "../test/helpers/agent-process.js";
import { type Benchmark, type BenchRow, summarize } from "./stats.js";

/**
 * Create → first exec through a real agent process, per runtime this machine can run (namespace,
 * gVisor, QEMU), cold and with a warm guest, side by side in one run; where a namespace create's time
 * goes (the agent's steps, the launcher, the guest until envd answers); floors measured in the same
 * run, interleaved with the namespace creates so that they see the same load; and what a
 * syscall-heavy command costs on gVisor against the namespace runtime.
 *
 * Knobs: WRENN_BENCH_AGENT_SCALE (default 1) multiplies every sample count (0.25 for a quick look);
 * WRENN_BENCH_AGENT_RUNTIMES (default "namespace,gvisor,qemu") picks the runtimes.
 */

const IMAGES_ROOT = process.env.WRENN_BENCH_IMAGES_ROOT ?? "/var/lib/wrenn";
const TEMPLATE = process.env.WRENN_BENCH_TEMPLATE ?? "minimal";
const SCALE = Number(process.env.WRENN_BENCH_AGENT_SCALE ?? "1");
const RUNTIMES = new Set((process.env.WRENN_BENCH_AGENT_RUNTIMES ?? "namespace,gvisor,qemu").split(","));
if (!(SCALE > 0)) throw new Error("WRENN_BENCH_AGENT_SCALE must be a positive number");

/** A sample count scaled by WRENN_BENCH_AGENT_SCALE, never below `min`. */
const reps = (n: number, min = 1) => Math.max(min, Math.round(n * SCALE));

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

interface Phases {
  queueMs: number;
  slotMs: number;
  runtimeStartMs: number;
  guestReadyMs: number;
  initMs: number;
}

/** The namespace runtime's debug line per start (agent/runtimes/namespace/runtime.ts). */
interface NamespaceSpawn {
  spawnedAt: number;
  spawnMs: number;
  totalMs: number;
}

function newId(i: number): string {
  return `bench${Date.now().toString(36)}${i.toString(36)}`.padEnd(20, "0").slice(0, 20);
}

function logLine<T>(log: string, id: string, msg: string): T | undefined {
  for (const line of log.split("\n")) {
    if (line.includes(id) && line.includes(`"msg":"${msg}"`)) return JSON.parse(line) as T;
  }
  return undefined;
}

/** The launcher's "wrenn-launch: at <unix ms> <step>" lines (--timing) from a console log. */
function launcherMarks(consoleLog: string): Map<string, number> {
  const marks = new Map<string, number>();
  for (const line of consoleLog.split("\n")) {
    const m = /^wrenn-launch: at ([0-9.]+) (.+)$/.exec(line);
    if (m?.[1] && m[2] && !marks.has(m[2])) marks.set(m[2], Number(m[1]));
  }
  return marks;
}

const countLines = async (agent: AgentProcess, needle: string) =>
  (await agent.log()).split("\n").filter((l) => l.includes(needle)).length;

type BenchRuntime = "namespace" | "gvisor" | "qemu";

/** Goals for create → first exec (issue 14): gVisor cold ≤ 1.5 s, warm ≤ 200 ms; namespace ≤ 300 ms. */
function createGoal(runtime: BenchRuntime, warm: boolean): string | undefined {
  if (runtime === "gvisor") return warm ? "p50 ≤ 200 ms" : "p50 ≤ 1.5 s";
  if (runtime === "namespace" && !warm) return "p50 ≤ 300 ms";
  return undefined;
}

const run = (cmd: string, args: string[]) => execa(cmd, args, { stdin: "ignore" });

/**
 * The floor of any namespace sandbox on this host: no agent, no user namespace, no seccomp, no disk
 * image, no cgroups, no wrenn-init: in a network namespace (made once, with a veth like a slot's), a
 * private mount and pid namespace mounts an overlay of the template tree, /proc and /dev, chroots and
 * runs the image's envd; the time until envd answers /health over the veth, polled like the agent does.
 * Its processes run in cgroups of their own, as a sandbox's do: on a busy host a cgroup of its own gets
 * a group's share of the CPU, which a process among the bench's would not.
 */
class BareNamespaceFloor {
  readonly #netns: string;
  readonly #hostVeth: string;
  readonly #guestIp: string;
  readonly #lower: string;
  readonly #dir: string;
  #cgroups: SandboxCgroups | undefined;

  private constructor(netns: string, hostVeth: string, guestIp: string, lower: string, dir: string) {
    this.#netns = netns;
    this.#hostVeth = hostVeth;
    this.#guestIp = guestIp;
    this.#lower = lower;
    this.#dir = dir;
  }

  /** argv that runs `command` inside the floor's cgroups (it joins them, then execs). */
  inCgroups(command: string[]): string[] {
    const dirs = this.#cgroups ? cgroupDirs(this.#cgroups) : [];
    const join = 'for d in "$@"; do [ "$d" = -- ] && break; echo $$ > "$d/cgroup.procs" || exit 1; done';
    // sh -c '<join>; shift up to --; exec the rest' sh <dirs> -- <command>
    return [
      "sh",
      "-c",
      `${join}; while [ "$1" != -- ]; do shift; done; shift; exec "$@"`,
      "sh",
      ...dirs,
      "--",
      ...command,
    ];
  }

  static async create(lower: string): Promise<BareNamespaceFloor> {
    const tag = randomBytes(3).toString("hex");
    const netns = `wbf-${tag}`;
    const hostVeth = `wbf${tag}h`;
    // A /23 nothing on this host routes (the helper test agents use); the floor takes its first /30.
    const base = (await freeSlotRange()).split("/")[0]?.split(".").slice(0, 3).join(".");
    const [hostIp, guestIp] = [`${base}.1`, `${base}.2`];
    const dir = await mkdtemp("/tmp/wrenn-bench-floor-");
    const floor = new BareNamespaceFloor(netns, hostVeth, guestIp, lower, dir);
    try {
      const layout = await detectCgroupLayout();
      floor.#cgroups = sandboxCgroups(layout, `wrenn-bench-floor-${tag}`, "floor");
      // The agent's default sandbox: 512 MiB, 1 vCPU.
      await createCgroups(layout, floor.#cgroups, { memoryMb: 512, vcpus: 1 });
      await run("ip", ["netns", "add", netns]);
      await run("ip", ["link", "add", hostVeth, "type", "veth", "peer", "name", "eth0", "netns", netns]);
      await run("ip", ["addr", "add", `${hostIp}/30`, "dev", hostVeth]);
      await run("ip", ["link", "set", hostVeth, "up"]);
      await run("ip", ["-n", netns, "addr", "add", `${guestIp}/30`, "dev", "eth0"]);
      await run("ip", ["-n", netns, "link", "set", "eth0", "up"]);
      await run("ip", ["-n", netns, "link", "set", "lo", "up"]);
    } catch (err) {
      await floor.close();
      throw err;
    }
    return floor;
  }

  /** Milliseconds from spawn to envd's first /health answer. */
  async sample(i: number): Promise<number> {
    const box = join(this.#dir, String(i));
    await Promise.all(["upper", "work", "merged"].map((d) => mkdir(join(box, d), { recursive: true })));
    const m = join(box, "merged");
    const script = [
      `mount -t overlay overlay -o lowerdir=${this.#lower},upperdir=${box}/upper,workdir=${box}/work ${m}`,
      `mount -t proc proc ${m}/proc`,
      `mount --rbind /dev ${m}/dev`,
      `exec chroot ${m} /usr/local/bin/envd`,
    ].join(" && ");
    const t0 = performance.now();
    // nsenter execs unshare in place: killing this pid kills unshare, and --kill-child its child, pid 1
    // of the new pid namespace, and with it everything inside; the mounts go with the mount namespace.
    const [command, ...args] = this.inCgroups([
      "nsenter",
      `--net=/run/netns/${this.#netns}`,
      "unshare",
      "--mount",
      "--pid",
      "--fork",
      "--kill-child",
      "--propagation",
      "private",
      "sh",
      "-c",
      script,
    ]);
    const child: ChildProcess = spawn(command as string, args, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
    try {
      const envd = new EnvdClient(this.#guestIp, "");
      const deadline = Date.now() + 120_000;
      while (!(await envd.healthy())) {
        if (child.exitCode !== null || Date.now() > deadline) {
          throw new Error(`floor sandbox: envd did not answer (exit ${child.exitCode}): ${stderr.slice(-500)}`);
        }
        await new Promise((r) => setTimeout(r, 10));
      }
      return performance.now() - t0;
    } finally {
      if (child.pid !== undefined && child.exitCode === null) child.kill("SIGKILL");
      await exited;
      await rm(box, { recursive: true, force: true, maxRetries: 5 });
    }
  }

  /** Milliseconds for `perl -e 1` in the floor's cgroups: what starting the launcher's interpreter costs. */
  async perlStart(): Promise<number> {
    const [command, ...args] = this.inCgroups(["perl", "-e", "1"]);
    const t0 = performance.now();
    await execa(command as string, args, { stdin: "ignore" });
    return performance.now() - t0;
  }

  async close(): Promise<void> {
    if (this.#cgroups) await killAndRemoveCgroups(this.#cgroups).catch(() => {});
    await execa("ip", ["netns", "del", this.#netns], { reject: false });
    await execa("ip", ["link", "del", this.#hostVeth], { reject: false });
    await rm(this.#dir, { recursive: true, force: true, maxRetries: 5 });
  }
}

/** A row of milliseconds: median, p95 and count of the samples. */
function msRow(name: string, samples: number[], extra: Partial<BenchRow> = {}): BenchRow {
  const sum = summarize(samples);
  return { name, unit: "ms", value: sum.median, p95: sum.p95, n: sum.n, ...extra };
}

interface Measured {
  rows: BenchRow[];
  /** Median create → first exec, for ratios between runtimes. */
  median: number;
}

async function measure(runtime: BenchRuntime, n: number, warmup: number, warm = 0): Promise<Measured> {
  const namespaceCold = runtime === "namespace" && warm === 0;
  const floor = namespaceCold ? await BareNamespaceFloor.create(await realpath(imageTree())) : undefined;
  // As deployed: spare network slots on (the test helper turns them off by default).
  const agent = await startAgentProcess({
    runtime,
    // The bench names its runtimes itself; WRENN_TEST_RUNTIME must not turn namespace into gvisor.
    namespaceOnly: true,
    rootDir: IMAGES_ROOT,
    env: {
      AGENT_SLOT_POOL: "2",
      AGENT_ENVD_TIMEOUT_MS: "120000",
      AGENT_WARM_SANDBOXES: String(warm),
      AGENT_WARM_TEMPLATE: TEMPLATE,
      // The namespace runtime logs its own steps at debug level.
      ...(runtime === "namespace" ? { AGENT_LOG_LEVEL: "debug" } : {}),
    },
  }).catch(async (err) => {
    await floor?.close();
    throw err;
  });
  const label = warm > 0 ? `${runtime} (warm guest)` : runtime;
  const s = {
    total: [] as number[],
    createOnly: [] as number[],
    firstExec: [] as number[],
    agentShare: [] as number[],
    boot: [] as number[],
    slot: [] as number[],
    runtimeStart: [] as number[],
    launcher: [] as number[],
    guest: [] as number[],
    floor: [] as number[],
    perl: [] as number[],
  };
  try {
    for (let i = 0; i < warmup + n; i++) {
      if (warm > 0) {
        // Measure the path a create takes when a warm guest is waiting (it boots after each create).
        const deadline = Date.now() + 120_000;
        while ((await countLines(agent, '"warm guest ready"')) < i + 1 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      // The floors right before each create: both see the same load.
      if (floor) {
        const floorMs = await floor.sample(i);
        const perlMs = await floor.perlStart();
        if (i >= warmup) {
          s.floor.push(floorMs);
          s.perl.push(perlMs);
        }
      }
      const sandboxId = newId(i);
      const t0 = performance.now();
      await agent.client.createSandbox({ sandboxId, template: TEMPLATE });
      const t1 = performance.now();
      const result = await agent.client.exec({ sandboxId, cmd: "true" });
      const t2 = performance.now();
      if (result.exitCode !== 0) throw new Error(`first exec exited ${result.exitCode}`);
      const consoleLog =
        runtime === "namespace"
          ? await readFile(join(agent.stateDir, "sandboxes", sandboxId, "console.log"), "utf8").catch(() => "")
          : "";
      await agent.client.destroySandbox({ sandboxId });
      if (i < warmup) continue;
      const log = await agent.log();
      const phases = logLine<{ phases?: Phases }>(log, sandboxId, "sandbox running")?.phases;
      if (!phases) throw new Error(`no phases logged for ${sandboxId}`);
      const boot = phases.runtimeStartMs + phases.guestReadyMs;
      s.total.push(t2 - t0);
      s.createOnly.push(t1 - t0);
      s.firstExec.push(t2 - t1);
      s.boot.push(boot);
      s.runtimeStart.push(phases.runtimeStartMs);
      s.agentShare.push(t1 - t0 - boot);
      s.slot.push(phases.slotMs);
      if (namespaceCold) {
        const spawned = logLine<NamespaceSpawn>(log, sandboxId, "namespace guest spawned");
        const execAt = launcherMarks(consoleLog).get("exec");
        if (spawned && execAt !== undefined) {
          const launcher = execAt - (spawned.spawnedAt - spawned.spawnMs);
          s.launcher.push(launcher);
          s.guest.push(boot - (spawned.totalMs - spawned.spawnMs) - launcher);
        }
      }
    }
  } finally {
    await agent.stop();
    await floor?.close();
  }
  const floorMedian = summarize(s.floor).median;
  const row = (name: string, samples: number[], extra: Partial<BenchRow> = {}): BenchRow =>
    msRow(`${label}: ${name}`, samples, extra);
  const vsFloor = (samples: number[]) =>
    floor ? { ratio: { value: summarize(samples).median / floorMedian, against: "floor" } } : {};
  const rows: BenchRow[] = [
    row("create → first exec", s.total, { goal: createGoal(runtime, warm > 0), ...vsFloor(s.total) }),
  ];
  if (floor) {
    rows.push(msRow("namespace floor: bare unshare + overlay in a netns → envd /health (same run)", s.floor));
  }
  rows.push(
    row("CreateSandbox round trip", s.createOnly),
    row(
      warm > 0 ? "runtime start (retarget)" : "runtime start + guest boot (until envd answers)",
      s.boot,
      warm > 0 ? {} : vsFloor(s.boot),
    ),
  );
  if (namespaceCold) {
    rows.push(
      row("  of which runtime.start() in the agent (disk, cgroups, uid range, spawn)", s.runtimeStart),
      row("  of which launcher: spawn → guest's first process (perl, namespaces, mounts, seccomp)", s.launcher),
      msRow("  namespace floor: perl -e 1 (same run)", s.perl),
      row("  of which guest: wrenn-init, tini, envd until /health", s.guest, vsFloor(s.guest)),
    );
  }
  rows.push(
    row("agent's own share (create minus runtime boot)", s.agentShare, {
      goal: runtime === "namespace" ? "≤ 50 ms" : undefined,
    }),
    row("  of which network slot", s.slot),
    row("first Exec round trip", s.firstExec),
  );
  return { rows, median: summarize(s.total).median };
}

const imageTree = () => join(IMAGES_ROOT, "images", TEMPLATE, "rootfs");

async function runscWorks(): Promise<boolean> {
  const { createExec } = await import("../agent/exec.js");
  const { createLogger } = await import("../agent/logger.js");
  const { probeGvisor } = await import("../agent/runtimes/gvisor/probe.js");
  const exec = createExec(createLogger("error"));
  return (await probeGvisor({ exec, searchPath: process.env.PATH ?? "/usr/bin:/bin" })).available;
}

/** What a syscall-heavy command costs on gVisor against the namespace runtime (one sandbox each). */
async function syscallOverhead(): Promise<BenchRow[]> {
  const commands = [
    { name: "python3 -c 'import json' ×100", script: "for i in $(seq 100); do python3 -c 'import json'; done" },
    {
      name: "git status in a 5,000-file repo",
      setup:
        "mkdir -p /tmp/repo && cd /tmp/repo && git init -q && for d in $(seq 50); do mkdir d$d; for f in $(seq 100); do echo $d$f > d$d/f$f; done; done && git add -A && git -c user.email=b@b -c user.name=b commit -qm init && echo changed > d1/f1",
      script: "cd /tmp/repo && git status --porcelain >/dev/null",
    },
  ];
  const samplesPerCommand = reps(3);
  const results = new Map<string, Map<string, number[]>>();
  for (const runtime of ["namespace", "gvisor"] as const) {
    const agent = await startAgentProcess({ runtime, namespaceOnly: true, rootDir: IMAGES_ROOT });
    try {
      const sandboxId = newId(99);
      await agent.client.createSandbox({ sandboxId, template: TEMPLATE, memoryMb: 1024, vcpus: 2 });
      for (const command of commands) {
        const exec = async (script: string) => {
          const r = await agent.client.exec({ sandboxId, cmd: "/bin/bash", args: ["-c", script], timeoutSec: 600 });
          if (r.exitCode !== 0)
            throw new Error(`${command.name} on ${runtime} exited ${r.exitCode}: ${Buffer.from(r.stderr).toString()}`);
        };
        // The setup (or one unmeasured run) warms the page cache and the guest's file system.
        await exec(command.setup ?? command.script);
        const samples: number[] = [];
        for (let i = 0; i < samplesPerCommand; i++) {
          const t0 = performance.now();
          await exec(command.script);
          samples.push(performance.now() - t0);
        }
        const byRuntime = results.get(command.name) ?? new Map<string, number[]>();
        byRuntime.set(runtime, samples);
        results.set(command.name, byRuntime);
      }
    } finally {
      await agent.stop();
    }
  }
  const rows: BenchRow[] = [];
  for (const [name, byRuntime] of results) {
    const base = summarize(byRuntime.get("namespace") ?? []);
    for (const runtime of ["namespace", "gvisor"]) {
      const s = summarize(byRuntime.get(runtime) ?? []);
      rows.push({
        name: `${runtime}: ${name}`,
        unit: "ms",
        value: s.median,
        p95: s.p95,
        n: s.n,
        ...(runtime === "gvisor" ? { ratio: { value: s.median / base.median, against: "namespace" } } : {}),
      });
    }
  }
  return rows;
}

/** Adds "× <against>" to the first row (create → first exec) of a runtime's rows. */
function withRatio(measured: Measured, base: Measured | undefined, against: string): BenchRow[] {
  const [first, ...rest] = measured.rows;
  if (!first || !base) return measured.rows;
  return [{ ...first, ratio: { value: measured.median / base.median, against } }, ...rest];
}

export const benchmark: Benchmark = {
  name: "agent",
  description:
    "sandbox create → first exec through a real agent, per available runtime, cold and warm, with same-run floors",
  async run() {
    const rows: BenchRow[] = [];
    const started = Date.now();
    const load = loadavg()
      .map((l) => l.toFixed(2))
      .join(", ");
    const notes: string[] = [
      `Images from ${IMAGES_ROOT}, template ${TEMPLATE}; sequential creates, each destroyed before the next (destroy not timed). Load average at the start: ${load}; sample counts × ${SCALE} (WRENN_BENCH_AGENT_SCALE).`,
      "Cold = no warm guest; the agent's spare network slots (AGENT_SLOT_POOL=2) and the namespace runtime's pool of ready disk images are warm, as on a host that has been up for a while.",
      "Agent's share = CreateSandbox round trip − runtime.start() − wait for envd /health; it covers the RPC, state files, the network slot and POST /init.",
    ];
    const image = join(IMAGES_ROOT, "images", TEMPLATE);
    if (!(await exists(join(image, "manifest.json")))) throw new Error(`no image at ${image}; build it first`);
    let namespaceCold: Measured | undefined;
    let namespaceWarm: Measured | undefined;
    if (await exists(join(image, "rootfs"))) {
      if (RUNTIMES.has("namespace")) {
        namespaceCold = await measure("namespace", reps(20, 3), 2);
        rows.push(...namespaceCold.rows);
        namespaceWarm = await measure("namespace", reps(20, 3), 2, 1);
        rows.push(...namespaceWarm.rows);
        notes.push(
          "namespace floor: the same envd from the same template tree, started bare (in cgroups of its own like a sandbox's: nsenter into a netns with a veth, unshare --mount --pid, overlay, /proc, /dev, chroot; no user namespace, seccomp, disk image, wrenn-init or agent), one right before each measured create. Ratios against it hold under load; the absolute values do not.",
          "launcher = from the agent's spawn of launcher.pl to its exec of the guest's first process (launcher --timing marks in the console log); guest = the rest of the boot until envd answers (wrenn-init, tini, node starting envd, the agent's polling).",
          "(warm guest): AGENT_WARM_SANDBOXES=1, a guest booted ahead of demand is handed to the create; its boot is off the create's path.",
        );
      }
      if (RUNTIMES.has("gvisor")) {
        if (await runscWorks()) {
          rows.push(...withRatio(await measure("gvisor", reps(10, 2), 1), namespaceCold, "namespace"));
          rows.push(...withRatio(await measure("gvisor", reps(10, 2), 1, 1), namespaceWarm, "namespace warm"));
          if (RUNTIMES.has("namespace")) rows.push(...(await syscallOverhead()));
          notes.push(
            "gvisor: runsc (Debian 20221219) on the ptrace platform, --network=host in the slot's netns. Syscall-heavy rows: one exec each, in one sandbox per runtime, after one unmeasured run; ratio = gvisor / namespace.",
          );
        } else notes.push("gvisor runtime skipped: runsc missing or its probe sandbox did not start");
      }
    } else notes.push("namespace and gvisor runtimes skipped: the image has no rootfs tree");
    const kernel = join(IMAGES_ROOT, "kernels", "current", "vmlinux");
    if (!RUNTIMES.has("qemu")) {
      // Not asked for.
    } else if ((await exists(join(image, "rootfs.ext4"))) && (await exists(kernel))) {
      try {
        rows.push(...withRatio(await measure("qemu", reps(3, 1), 0), namespaceCold, "namespace"));
        notes.push("qemu runs under TCG on this machine unless KVM works; expect seconds per boot.");
      } catch (err) {
        notes.push(`qemu runtime failed: ${(err as Error).message}`);
      }
    } else {
      notes.push("qemu runtime skipped: no rootfs.ext4 or kernel in the images root");
    }
    notes.push(
      `Whole section: ${((Date.now() - started) / 1000).toFixed(0)} s; load average at the end: ${loadavg()
        .map((l) => l.toFixed(2))
        .join(", ")}.`,
    );
    return { title: "Host agent: create to first exec", rows, notes };
  },
};
