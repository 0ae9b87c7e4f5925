import { access } from "node:fs/promises";
import { filesLayout } from "../agent/layout.js";
import { loadImageBuilderConfig } from "../rootfs/config.js";
import { bootGuest, bootNamespaceGuest } from "../rootfs/verify.js";
import { type Benchmark, type BenchRow, summarize } from "./stats.js";

/** Guest uptime (seconds) at a wrenn-init log line, from the serial console. */
function initMark(log: string, pattern: RegExp): number | undefined {
  for (const line of log.split("\n")) {
    const m = /^wrenn-init: \[([\d.]+)s\] (.*)$/.exec(line.trim());
    if (m?.[1] && m[2] && pattern.test(m[2])) return Number.parseFloat(m[1]) * 1000;
  }
  return undefined;
}

/** Boots of one guest kernel: launch → /health, and the guest-clock split from the console. */
interface KernelSamples {
  ready: number[];
  toInit: number[];
  initToExec: number[];
}

/**
 * Boot-to-envd-ready: from launching the VM to the first successful envd /health over the guest's TAP,
 * for the minimal image. Uses KVM when it is usable, else QEMU TCG (the figure on KVM-less CI hosts).
 * Boots both guest kernels in the same run, alternating so both see the same host load: Debian's cloud
 * kernel with its initramfs (the fallback) and the microvm kernel (drivers built in, no initramfs; what
 * the QEMU runtime boots when the image builder built it). Also splits the guest side: kernel (+
 * initramfs) until wrenn-init starts, wrenn-init until it execs tini.
 */
export const benchmark: Benchmark = {
  name: "boot",
  description:
    "VM boot to envd ready (QEMU microvm; KVM when usable, else TCG): microvm kernel vs Debian cloud kernel + initramfs, minimal image",
  async run() {
    const config = loadImageBuilderConfig();
    const runs = 5;
    const hasMicrovm = await access(filesLayout(config.rootDir).microvmKernelPath).then(
      () => true,
      () => false,
    );
    const kernels: ("debian" | "microvm")[] = hasMicrovm ? ["debian", "microvm"] : ["debian"];
    const samples = new Map(kernels.map((k) => [k, { ready: [], toInit: [], initToExec: [] } as KernelSamples]));
    let kvm = false;
    for (let i = 0; i < runs; i++) {
      for (const kernel of kernels) {
        const into = samples.get(kernel) as KernelSamples;
        const guest = await bootGuest({ rootDir: config.rootDir, kernel });
        try {
          kvm = guest.kvm;
          into.ready.push(guest.bootToReadyMs);
          const log = await guest.consoleLog();
          const start = initMark(log, /^starting/);
          const exec = initMark(log, /^exec tini/);
          if (start !== undefined) into.toInit.push(start);
          if (start !== undefined && exec !== undefined) into.initToExec.push(exec - start);
        } finally {
          await guest.stop();
        }
      }
    }
    const accel = kvm ? "KVM" : "TCG";
    const label = { debian: "Debian cloud kernel + initramfs", microvm: "microvm kernel, no initramfs" } as const;
    const rows: BenchRow[] = [];
    const debian = summarize(samples.get("debian")?.ready ?? []);
    const ranges: string[] = [];
    for (const kernel of kernels) {
      const got = samples.get(kernel) as KernelSamples;
      const s = summarize(got.ready);
      ranges.push(`${label[kernel]}: min ${s.min.toFixed(0)} ms, max ${s.max.toFixed(0)} ms`);
      rows.push({
        name: `QEMU ${accel}, ${label[kernel]}: launch → envd /health`,
        unit: "ms",
        value: s.median,
        p95: s.p95,
        n: s.n,
        ...(kernel === "microvm"
          ? { ratio: { value: s.median / debian.median, against: "microvm / Debian kernel" } }
          : {}),
        goal:
          kernel === "microvm"
            ? kvm
              ? "≤ 300 ms"
              : "≤ 5 s under TCG (≤ 0.4× the Debian kernel)"
            : "(the fallback; no goal)",
      });
      const k = summarize(got.toInit);
      if (k.n > 0)
        rows.push({
          name: `QEMU ${accel}, ${label[kernel]}: kernel → wrenn-init (guest clock)`,
          unit: "ms",
          value: k.median,
          p95: k.p95,
          n: k.n,
        });
      const w = summarize(got.initToExec);
      if (w.n > 0)
        rows.push({
          name: `QEMU ${accel}, ${label[kernel]}: wrenn-init → exec tini/envd (guest clock)`,
          unit: "ms",
          value: w.median,
          p95: w.p95,
          n: w.n,
        });
    }
    const s = summarize(samples.get(hasMicrovm ? "microvm" : "debian")?.ready ?? []);
    // The namespace runtime's way of starting the same image: overlay + bubblewrap + wrenn-init.
    const nsReady: number[] = [];
    for (let i = 0; i < runs; i++) {
      const guest = await bootNamespaceGuest({ rootDir: config.rootDir });
      try {
        nsReady.push(guest.bootToReadyMs);
      } finally {
        await guest.stop();
      }
    }
    const ns = summarize(nsReady);
    rows.push({
      name: "namespace (overlay + bwrap + wrenn-init): launch → envd /health",
      unit: "ms",
      value: ns.median,
      p95: ns.p95,
      n: ns.n,
      ratio: {
        value: s.median / ns.median,
        against: `QEMU ${accel} (${hasMicrovm ? "microvm" : "Debian"} kernel) / namespace`,
      },
    });
    return {
      title: "Boot to envd ready",
      rows,
      notes: [
        `${ranges.join("; ")}; ${s.n} sequential boots per kernel, alternating; 1 vCPU, 512 MiB, qcow2 overlay, TAP in a fresh netns.`,
        hasMicrovm
          ? "The microvm kernel is built by the image builder from Debian's linux-source-6.1 (rootfs/kernel/microvm.config on tinyconfig): virtio-mmio, ext4 and the rest built in, so no initramfs and no module loading."
          : "No microvm kernel under the root (kernels/microvm): its build was skipped or failed, so only the Debian kernel was measured.",
        "The remainder after exec is envd's own start-up (node) until /health answers.",
        kvm
          ? "KVM was usable."
          : "No usable KVM here (no VMX/SVM; /dev/kvm on a PVM host cannot run standard guests), so TCG.",
        "Namespace row: the image tree as an overlay lower layer, bubblewrap in a fresh netns, wrenn-init then tini and envd; without the agent's slot and cgroup set-up (bench/agent.ts measures the whole create).",
      ],
    };
  },
};
