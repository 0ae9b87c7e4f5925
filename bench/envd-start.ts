import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { buildEnvd } from "../agent/envd/build.js";
import { filesLayout } from "../agent/layout.js";
import { gvisorBundleConfig } from "../agent/runtimes/gvisor/spec.js";
import { loadImageBuilderConfig } from "../rootfs/config.js";
import { bootGuest } from "../rootfs/verify.js";
import { type Benchmark, type BenchRow, summarize } from "./stats.js";

/**
 * envd's start: spawn → envd answering GET /health, for a bare node HTTP server (the floor: node's
 * own start), envd from the plain bundle (how every guest started before the snapshot) and envd from
 * its V8 startup snapshot (lib/envd.blob, what bin/envd runs now). On the host as a plain process
 * (what the namespace runtime does, minus bubblewrap) and inside gVisor (runsc, ptrace platform,
 * where every syscall is slow). The three are interleaved round by round so load drifts hit them alike.
 */

const HOST_RUNS = 15;
const GVISOR_RUNS = 7;
const HEALTH_TIMEOUT_MS = 20_000;

type Variant = "floor" | "bundle" | "snapshot";
const VARIANTS: readonly Variant[] = ["floor", "bundle", "snapshot"];
const LABEL: Record<Variant, string> = {
  floor: "bare node HTTP server (floor)",
  bundle: "envd before (old launcher, plain bundle)",
  snapshot: "envd after (launcher, startup snapshot)",
};

/** A node server answering /health, printing the same line envd prints: node's start and nothing else. */
const FLOOR_SCRIPT = `require("http").createServer((q, s) => { s.writeHead(204); s.end(); })
  .listen(0, "127.0.0.1", function () { console.log("envd listening on 127.0.0.1:" + this.address().port); });`;

const ENVD_ARGS = ["--debug", "--quiet", "--port", "0", "--host", "127.0.0.1"];

/**
 * The launcher guests ran before the snapshot, word for word, called through a link as guests call
 * /usr/local/bin/envd: it ran readlink and dirname, then node on the bundle.
 */
const BEFORE_WRAPPER = `#!/bin/sh
self=$(readlink -f "$0")
dir=$(dirname "$self")
exec "$dir/node" "$dir/../lib/envd.mjs" "$@"
`;

/** Adds the old launcher and a link to it to the built package. */
function addBeforeLauncher(dist: string): void {
  writeFileSync(join(dist, "bin/envd-before"), BEFORE_WRAPPER, { mode: 0o755 });
  symlinkSync(join(dist, "bin/envd-before"), join(dist, "envd-before-link"));
}

/**
 * The command of a variant, from the built package in `dist`. The snapshot runs through today's
 * bin/envd by its real path, which resolves its directory without a process, as the image's
 * /usr/local/bin/envd link does (test -ef); the bundle through the old launcher behind a link.
 */
function command(dist: string, variant: Variant): string[] {
  if (variant === "floor") return [join(dist, "bin/node"), "-e", FLOOR_SCRIPT];
  if (variant === "bundle") return [join(dist, "envd-before-link"), ...ENVD_ARGS];
  return [join(dist, "bin/envd"), ...ENVD_ARGS];
}

/** Resolves with the port once the child prints its listening line. */
function listeningPort(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = "";
    child.stdout?.on("data", (d: Buffer) => {
      text += d.toString();
      const m = /listening on [^\s]+:(\d+)/.exec(text);
      if (m?.[1]) resolve(Number(m[1]));
    });
    child.once("exit", (code) => reject(new Error(`exited with ${code} before listening: ${text.slice(-300)}`)));
    setTimeout(() => reject(new Error("no listening line in time")), HEALTH_TIMEOUT_MS).unref();
  });
}

/** Milliseconds from `t0` until GET /health on the port answers 2xx. */
async function healthAfter(t0: number, port: number): Promise<number> {
  for (;;) {
    const res = await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined);
    if (res?.ok) return performance.now() - t0;
    if (performance.now() - t0 > HEALTH_TIMEOUT_MS) throw new Error("/health never answered");
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await gone;
}

/** One start on the host: a plain process, as the namespace runtime's guest (without bubblewrap). */
async function hostStart(dist: string, variant: Variant): Promise<number> {
  const argv = command(dist, variant);
  const t0 = performance.now();
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "pipe", "inherit"] });
  try {
    return await healthAfter(t0, await listeningPort(child));
  } finally {
    await stopChild(child);
  }
}

/**
 * One start inside gVisor: `runsc --platform=ptrace --network=host --ignore-cgroups run` of a bundle
 * whose root is the host's / read-only (the package lives there), the agent's guest spec otherwise.
 * network=host in the host's netns: envd binds 127.0.0.1 only, so the bench reaches it on loopback.
 */
async function gvisorStart(dist: string, variant: Variant, scratch: string, n: number): Promise<number> {
  const id = `wrenn-bench-envd-start-${process.pid}-${n}`;
  const bundle = join(scratch, id);
  const state = join(bundle, "state");
  mkdirSync(state, { recursive: true });
  const config = gvisorBundleConfig({ rootfs: "/", sandboxId: id, init: command(dist, variant) });
  config.root = { path: "/", readonly: true };
  writeFileSync(join(bundle, "config.json"), JSON.stringify(config));
  const globals = [`--root=${state}`, "--platform=ptrace", "--network=host", "--ignore-cgroups"];
  const t0 = performance.now();
  const child = spawn("runsc", [...globals, "run", "--bundle", bundle, id], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    return await healthAfter(t0, await listeningPort(child));
  } finally {
    try {
      execFileSync("runsc", [...globals, "kill", id, "KILL"], { stdio: "ignore" });
    } catch {
      // Already gone.
    }
    await stopChild(child);
    try {
      execFileSync("runsc", [...globals, "delete", "--force", id], { stdio: "ignore" });
    } catch {
      // Nothing left to delete.
    }
    rmSync(bundle, { recursive: true, force: true });
  }
}

const QEMU_RUNS = 5;

/**
 * A files root whose minimal image is today's with the old start put back: the old launcher in
 * /opt/wrenn/envd/bin/envd and no snapshot blob, written into a sparse copy of rootfs.ext4 with
 * debugfs. kernels/ links to the real one. The real image is never written.
 */
function beforeImageRoot(realRoot: string, scratch: string): string {
  const real = filesLayout(realRoot);
  const root = join(scratch, "qemu-before");
  const layout = filesLayout(root);
  mkdirSync(join(layout.imageRootfsExt4("minimal"), ".."), { recursive: true });
  symlinkSync(join(real.kernelPath, "../.."), join(root, "kernels"));
  execFileSync("cp", ["--sparse=always", real.imageRootfsExt4("minimal"), layout.imageRootfsExt4("minimal")]);
  const wrapper = join(scratch, "envd-before-wrapper");
  writeFileSync(wrapper, BEFORE_WRAPPER, { mode: 0o755 });
  const ext4 = layout.imageRootfsExt4("minimal");
  for (const req of [
    "rm /opt/wrenn/envd/lib/envd.blob",
    "rm /opt/wrenn/envd/bin/envd",
    `write ${wrapper} /opt/wrenn/envd/bin/envd`,
    "sif /opt/wrenn/envd/bin/envd mode 0100755",
  ]) {
    execFileSync("debugfs", ["-w", "-R", req, ext4], { stdio: "ignore" });
  }
  return root;
}

/** One QEMU boot of the minimal image under `root`: launch → envd /health (TCG here: no KVM). */
async function qemuStart(root: string): Promise<number> {
  const guest = await bootGuest({ rootDir: root });
  try {
    return guest.bootToReadyMs;
  } finally {
    await guest.stop();
  }
}

/** Runs every variant `runs` times, interleaved, and returns the samples per variant. */
async function measure(
  runs: number,
  start: (variant: Variant, n: number) => Promise<number>,
): Promise<Record<Variant, number[]>> {
  const out: Record<Variant, number[]> = { floor: [], bundle: [], snapshot: [] };
  // One unmeasured round: page cache and runsc's first start.
  for (const v of VARIANTS) await start(v, -1);
  for (let i = 0; i < runs; i++) for (const v of VARIANTS) out[v].push(await start(v, i));
  return out;
}

function rows(place: string, samples: Record<Variant, number[]>, goal: string): { rows: BenchRow[]; note: string } {
  const s = {
    floor: summarize(samples.floor),
    bundle: summarize(samples.bundle),
    snapshot: summarize(samples.snapshot),
  };
  const out: BenchRow[] = VARIANTS.map((v) => ({
    name: `${place}: ${LABEL[v]} spawn → /health`,
    unit: "ms",
    value: s[v].median,
    p95: s[v].p95,
    n: s[v].n,
    ...(v === "snapshot"
      ? { ratio: { value: s.snapshot.median / s.bundle.median, against: "plain bundle" }, goal }
      : v === "bundle"
        ? { ratio: { value: s.bundle.median / s.floor.median, against: "floor" } }
        : {}),
  }));
  const own = (v: Variant) => s[v].median - s.floor.median;
  out.push({
    name: `${place}: envd's own start above the floor, snapshot vs bundle`,
    unit: "ms",
    value: own("snapshot"),
    ratio: { value: own("snapshot") / own("bundle"), against: `bundle's ${own("bundle").toFixed(0)} ms` },
  });
  const range = VARIANTS.map((v) => `${v} ${s[v].min.toFixed(0)}–${s[v].max.toFixed(0)} ms`).join(", ");
  return { rows: out, note: `${place} min–max: ${range}.` };
}

export const benchmark: Benchmark = {
  name: "envd-start",
  description: "envd spawn → /health: floor, plain bundle, startup snapshot; host and gVisor",
  async run() {
    const scratch = mkdtempSync(join(tmpdir(), "wrenn-bench-envd-start-"));
    const notes: string[] = [];
    const report: BenchRow[] = [];
    try {
      const dist = await buildEnvd(join(scratch, "envd"));
      addBeforeLauncher(dist);
      if (!existsSync(join(dist, "lib/envd.blob")))
        notes.push("the build made no snapshot: both envd rows are the bundle");
      const load0 = loadavg()[0] ?? 0;
      const host = rows("host", await measure(HOST_RUNS, (v) => hostStart(dist, v)), "≤ 0.4× bundle");
      report.push(...host.rows);
      notes.push(host.note);
      let runsc = false;
      try {
        execFileSync("runsc", ["--version"], { stdio: "ignore" });
        runsc = true;
      } catch {
        notes.push("gVisor: runsc not installed, not measured");
      }
      if (runsc) {
        const gv = rows(
          "gvisor",
          await measure(GVISOR_RUNS, (v, n) => gvisorStart(dist, v, scratch, n)),
          "≤ 0.4× bundle",
        );
        report.push(...gv.rows);
        notes.push(
          gv.note,
          "gVisor figures include runsc's own start (sandbox, gofer, ptrace stubs): see the floor row.",
        );
      }
      const realRoot = loadImageBuilderConfig().rootDir;
      if (process.env.WRENN_BENCH_QEMU === "0") notes.push("QEMU: skipped (WRENN_BENCH_QEMU=0)");
      else if (!existsSync(filesLayout(realRoot).imageRootfsExt4("minimal")))
        notes.push("QEMU: no minimal image (npm run image -- build), not measured");
      else {
        const beforeRoot = beforeImageRoot(realRoot, scratch);
        const q: Record<"before" | "after", number[]> = { before: [], after: [] };
        for (let i = 0; i < QEMU_RUNS; i++) {
          q.before.push(await qemuStart(beforeRoot));
          q.after.push(await qemuStart(realRoot));
        }
        const b = summarize(q.before);
        const a = summarize(q.after);
        report.push(
          {
            name: "qemu: minimal image, old launcher + bundle: launch → /health",
            unit: "ms",
            value: b.median,
            p95: b.p95,
            n: b.n,
          },
          {
            name: "qemu: minimal image, launcher + snapshot: launch → /health",
            unit: "ms",
            value: a.median,
            p95: a.p95,
            n: a.n,
            ratio: { value: a.median / b.median, against: "old launcher + bundle (whole boot)" },
          },
          {
            name: "qemu: time saved by the snapshot per boot",
            unit: "ms",
            value: b.median - a.median,
          },
        );
        notes.push(
          `qemu min–max: before ${b.min.toFixed(0)}–${b.max.toFixed(0)} ms, after ${a.min.toFixed(0)}–${a.max.toFixed(0)} ms (the same image but for envd's launcher and blob; Debian cloud kernel + initramfs, bootGuest's default).`,
        );
      }
      notes.push(
        `load average (1 min) ${load0.toFixed(2)} before, ${(loadavg()[0] ?? 0).toFixed(2)} after: the machine is shared, figures are provisional.`,
      );
      return { title: "envd start (issue 23)", rows: report, notes };
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  },
};
