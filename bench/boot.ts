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

/**
 * Boot-to-envd-ready: from launching the VM to the first successful envd /health over the guest's TAP,
 * for the minimal image. Uses KVM when it is usable, else QEMU TCG (the figure on KVM-less CI hosts).
 * Also splits the guest side: kernel + initramfs until wrenn-init starts, wrenn-init until it execs tini.
 */
export const benchmark: Benchmark = {
  name: "boot",
  description: "VM boot to envd ready (QEMU microvm; KVM when usable, else TCG), minimal image",
  async run() {
    const config = loadImageBuilderConfig();
    const runs = 5;
    const ready: number[] = [];
    const toInit: number[] = [];
    const initToExec: number[] = [];
    let kvm = false;
    for (let i = 0; i < runs; i++) {
      const guest = await bootGuest({ rootDir: config.rootDir });
      try {
        kvm = guest.kvm;
        ready.push(guest.bootToReadyMs);
        const log = await guest.consoleLog();
        const start = initMark(log, /^starting/);
        const exec = initMark(log, /^exec tini/);
        if (start !== undefined) toInit.push(start);
        if (start !== undefined && exec !== undefined) initToExec.push(exec - start);
      } finally {
        await guest.stop();
      }
    }
    const accel = kvm ? "KVM" : "TCG";
    const s = summarize(ready);
    const rows: BenchRow[] = [
      {
        name: `QEMU ${accel}: launch → envd /health`,
        unit: "ms",
        value: s.median,
        p95: s.p95,
        n: s.n,
        goal: kvm ? "≤ 300 ms" : "(no goal under TCG; KVM goal ≤ 300 ms)",
      },
    ];
    const k = summarize(toInit);
    if (k.n > 0)
      rows.push({
        name: `QEMU ${accel}: kernel + initramfs → wrenn-init (guest clock)`,
        unit: "ms",
        value: k.median,
        p95: k.p95,
        n: k.n,
      });
    const w = summarize(initToExec);
    if (w.n > 0)
      rows.push({
        name: `QEMU ${accel}: wrenn-init → exec tini/envd (guest clock)`,
        unit: "ms",
        value: w.median,
        p95: w.p95,
        n: w.n,
      });
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
      ratio: { value: s.median / ns.median, against: `QEMU ${accel} / namespace` },
    });
    return {
      title: "Boot to envd ready",
      rows,
      notes: [
        `min ${s.min.toFixed(0)} ms, max ${s.max.toFixed(0)} ms over ${s.n} sequential boots; 1 vCPU, 512 MiB, qcow2 overlay, TAP in a fresh netns.`,
        "The remainder after exec is envd's own start-up (node) until /health answers.",
        kvm
          ? "KVM was usable."
          : "No usable KVM here (no VMX/SVM; /dev/kvm on a PVM host cannot run standard guests), so TCG.",
        "Namespace row: the image tree as an overlay lower layer, bubblewrap in a fresh netns, wrenn-init then tini and envd; without the agent's slot and cgroup set-up (bench/agent.ts measures the whole create).",
      ],
    };
  },
};
