import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createExec } from "../agent/exec.js";
import { filesLayout } from "../agent/layout.js";
import { noopLogger } from "../agent/logger.js";
import { GUEST_NETWORK } from "../agent/runtimes/kernel-cmdline.js";
import { QemuRuntime } from "../agent/runtimes/qemu/runtime.js";
import type { GuestHandle, GuestSpec } from "../agent/runtimes/types.js";
import { type Benchmark, type BenchRow, type Summary, summarize } from "./stats.js";

/**
 * Pause to disk and resume of QEMU guests of 256 and 512 MiB running the minimal image with envd:
 * pause = QMP stop + migrate to a file + quit + move the disk; resume = start QEMU with -incoming +
 * load + cont; "to envd" adds the first answer of envd's /health from inside the slot's netns.
 * Times are also given per GiB of guest memory, the unit E2B publishes (≈4 s/GiB pause, ≈1 s resume).
 */

const ROUNDS = 3;
const MEMORY_SIZES_MB = [256, 512];
const exec = createExec(noopLogger);
const layout = filesLayout("/var/lib/wrenn");

async function waitForEnvd(netns: string, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const res = await exec(
      "ip",
      [
        "netns",
        "exec",
        netns,
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        "1",
        `http://${GUEST_NETWORK.guestIp}:49983/health`,
      ],
      { allowFailure: true, timeoutMs: 5_000 },
    );
    if (res.stdout.startsWith("2")) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`envd did not answer within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface SizeResult {
  memoryMb: number;
  bootMs: number;
  pauseMs: number[];
  resumeMs: number[];
  resumeToEnvdMs: number[];
  memoryFileBytes: number[];
  diskBytes: number[];
}

async function measure(runtime: QemuRuntime, root: string, memoryMb: number): Promise<SizeResult> {
  const netns = `wb${randomBytes(3).toString("hex")}`;
  const name = `bench${memoryMb}`;
  const spec: GuestSpec = {
    sandboxId: `${name}${"0".repeat(20 - name.length)}`,
    template: "minimal",
    vcpus: 1,
    memoryMb,
    sandboxDir: join(root, "sandboxes", name),
    network: { netns, tapName: "tap0", ...GUEST_NETWORK, guestMac: "02:fc:00:00:00:01" },
    kernelPath: layout.kernelPath,
    initrdPath: layout.initrdPath,
    imageRootfsTree: layout.imageRootfsTree("minimal"),
    imageRootfsExt4: layout.imageRootfsExt4("minimal"),
  };
  const snapshotDir = join(root, "snapshots", name);
  const batch = [
    "link set lo up",
    "tuntap add tap0 mode tap",
    `addr add ${GUEST_NETWORK.gatewayIp}/${GUEST_NETWORK.prefixLength} dev tap0`,
    "link set tap0 up",
  ];
  await exec("ip", ["netns", "add", netns]);
  let handle: GuestHandle | undefined;
  const result: SizeResult = {
    memoryMb,
    bootMs: 0,
    pauseMs: [],
    resumeMs: [],
    resumeToEnvdMs: [],
    memoryFileBytes: [],
    diskBytes: [],
  };
  try {
    await exec("ip", ["-n", netns, "-batch", "-"], { input: `${batch.join("\n")}\n` });
    const t0 = performance.now();
    handle = await runtime.start(spec);
    await waitForEnvd(netns, 120_000);
    result.bootMs = performance.now() - t0;
    // Let boot-time activity settle so each round snapshots a comparable idle guest.
    await new Promise((r) => setTimeout(r, 2000));
    for (let round = 0; round < ROUNDS; round++) {
      const p0 = performance.now();
      const info = await runtime.snapshot(spec, handle, snapshotDir);
      result.pauseMs.push(performance.now() - p0);
      handle = undefined;
      result.memoryFileBytes.push(info.files.find((f) => f.name === "memory")?.sizeBytes ?? 0);
      result.diskBytes.push(info.files.find((f) => f.name === "disk.qcow2")?.sizeBytes ?? 0);
      const r0 = performance.now();
      handle = await runtime.restore(spec, snapshotDir);
      result.resumeMs.push(performance.now() - r0);
      await waitForEnvd(netns, 30_000);
      result.resumeToEnvdMs.push(performance.now() - r0);
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    await runtime.stop(spec, handle).catch(() => undefined);
    await exec("ip", ["netns", "del", netns], { allowFailure: true });
  }
  return result;
}

export const benchmark: Benchmark = {
  name: "pause",
  description: "QEMU pause to disk and resume, 256 and 512 MiB guests (seconds per GiB of guest memory)",
  async run() {
    if (process.getuid?.() !== 0) throw new Error("needs root (network namespace and TAP device)");
    for (const path of [layout.kernelPath, layout.imageManifest("minimal")]) {
      if (!existsSync(path)) throw new Error(`needs ${path}: build the image first (npm run image -- build)`);
    }
    const runtime = await QemuRuntime.create({ exec, logger: noopLogger });
    const root = await mkdtemp(join(tmpdir(), "wrenn-bench-pause-"));
    const rows: BenchRow[] = [];
    const notes: string[] = [];
    try {
      for (const memoryMb of MEMORY_SIZES_MB) {
        const r = await measure(runtime, root, memoryMb);
        const gib = memoryMb / 1024;
        const pause = summarize(r.pauseMs);
        const resume = summarize(r.resumeMs);
        const toEnvd = summarize(r.resumeToEnvdMs);
        const memFile = summarize(r.memoryFileBytes.map((b) => b / 2 ** 20));
        const label = `${memoryMb} MiB`;
        /** A step's time, and its time per GiB of guest memory against the rate E2B publishes. */
        const stepRows = (step: string, what: string, times: Summary, e2bSecondsPerGib: number): BenchRow[] => [
          { name: `${label}: ${step} (${what})`, unit: "ms", value: times.median, p95: times.p95, n: times.n },
          {
            name: `${label}: ${step} per GiB`,
            unit: "s/GiB",
            value: times.median / 1000 / gib,
            ratio: { value: times.median / 1000 / gib / e2bSecondsPerGib, against: `E2B's ≈${e2bSecondsPerGib} s/GiB` },
          },
        ];
        rows.push(
          ...stepRows("pause", "stop, save, quit, move disk", pause, 4),
          ...stepRows("resume", "restore to running", resume, 1),
          { name: `${label}: resume to envd /health`, unit: "ms", value: toEnvd.median, p95: toEnvd.p95, n: toEnvd.n },
          { name: `${label}: snapshot memory file`, unit: "MiB", value: memFile.median, n: memFile.n },
          { name: `${label}: snapshot disk overlay`, unit: "MiB", value: summarize(r.diskBytes).median / 2 ** 20 },
          { name: `${label}: cold boot to envd /health`, unit: "ms", value: r.bootMs, n: 1 },
        );
      }
      const kvm = runtime.capabilities().kvm;
      notes.push(
        `Accelerator: ${kvm ? "KVM" : "TCG (no usable KVM)"}. Guests idle with envd running; ${ROUNDS} pause/resume rounds per size.`,
        "The memory file is QEMU's migration stream: zero pages take a few bytes each, so its size follows the memory the guest has touched, not its size.",
        "Pause time is dominated by writing touched RAM (page cache speed); resume by QEMU start-up plus reading the stream; under TCG neither depends much on the accelerator, so KVM hosts should see similar pause times and slightly faster resumes.",
      );
    } finally {
      await rm(root, { recursive: true, force: true });
    }
    return { title: "QEMU pause to disk and resume", rows, notes };
  },
};
