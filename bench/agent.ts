import { access } from "node:fs/promises";
import { join } from "node:path";
import { type AgentProcess, startAgentProcess } from "../test/helpers/agent-process.js";
import { type Benchmark, type BenchRow, summarize } from "./stats.js";

/**
 * Create → first exec through a real agent process, per runtime this machine can run, and the agent's
 * own share of a create: the CreateSandbox round trip minus the runtime's start and the guest's boot
 * (until envd answers), which the agent logs per create as `phases`.
 */

const IMAGES_ROOT = process.env.WRENN_BENCH_IMAGES_ROOT ?? "/var/lib/wrenn";
const TEMPLATE = process.env.WRENN_BENCH_TEMPLATE ?? "minimal";

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

function newId(i: number): string {
  return `bench${Date.now().toString(36)}${i.toString(36)}`.padEnd(20, "0").slice(0, 20);
}

async function phasesOf(agent: AgentProcess, id: string): Promise<Phases | undefined> {
  const lines = (await agent.log()).split("\n");
  for (const line of lines) {
    if (!line.includes(id) || !line.includes('"sandbox running"')) continue;
    return (JSON.parse(line) as { phases?: Phases }).phases;
  }
  return undefined;
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

async function measure(runtime: BenchRuntime, n: number, warmup: number, warm = 0): Promise<BenchRow[]> {
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
    },
  });
  const label = warm > 0 ? `${runtime} (warm guest)` : runtime;
  const total: number[] = [];
  const createOnly: number[] = [];
  const firstExec: number[] = [];
  const agentShare: number[] = [];
  const boot: number[] = [];
  const slot: number[] = [];
  try {
    for (let i = 0; i < warmup + n; i++) {
      if (warm > 0) {
        // Measure the path a create takes when a warm guest is waiting (it boots after each create).
        const deadline = Date.now() + 120_000;
        while ((await countLines(agent, '"warm guest ready"')) < i + 1 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      const sandboxId = newId(i);
      const t0 = performance.now();
      await agent.client.createSandbox({ sandboxId, template: TEMPLATE });
      const t1 = performance.now();
      const result = await agent.client.exec({ sandboxId, cmd: "true" });
      const t2 = performance.now();
      if (result.exitCode !== 0) throw new Error(`first exec exited ${result.exitCode}`);
      await agent.client.destroySandbox({ sandboxId });
      if (i < warmup) continue;
      const phases = await phasesOf(agent, sandboxId);
      if (!phases) throw new Error(`no phases logged for ${sandboxId}`);
      total.push(t2 - t0);
      createOnly.push(t1 - t0);
      firstExec.push(t2 - t1);
      boot.push(phases.runtimeStartMs + phases.guestReadyMs);
      agentShare.push(t1 - t0 - phases.runtimeStartMs - phases.guestReadyMs);
      slot.push(phases.slotMs);
    }
  } finally {
    await agent.stop();
  }
  const row = (name: string, samples: number[], goal?: string): BenchRow => {
    const s = summarize(samples);
    return { name: `${label}: ${name}`, unit: "ms", value: s.median, p95: s.p95, n: s.n, goal };
  };
  return [
    row("create → first exec", total, createGoal(runtime, warm > 0)),
    row("CreateSandbox round trip", createOnly),
    row("runtime start + guest boot (until envd answers)", boot),
    row("agent's own share (create minus runtime boot)", agentShare, runtime === "namespace" ? "≤ 50 ms" : undefined),
    row("  of which network slot", slot),
    row("first Exec round trip", firstExec),
  ];
}

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
  const results = new Map<string, Map<string, number[]>>();
  for (const runtime of ["namespace", "gvisor"] as const) {
    const agent = await startAgentProcess({ runtime, namespaceOnly: true, rootDir: IMAGES_ROOT });
    try {
      const sandboxId = newId(99);
      await agent.client.createSandbox({ sandboxId, template: TEMPLATE, memoryMb: 1024, vcpus: 2 });
      for (const command of commands) {
        const run = async (script: string) => {
          const r = await agent.client.exec({ sandboxId, cmd: "/bin/bash", args: ["-c", script], timeoutSec: 600 });
          if (r.exitCode !== 0)
            throw new Error(`${command.name} on ${runtime} exited ${r.exitCode}: ${Buffer.from(r.stderr).toString()}`);
        };
        if (command.setup) await run(command.setup);
        await run(command.script);
        const samples: number[] = [];
        for (let i = 0; i < 3; i++) {
          const t0 = performance.now();
          await run(command.script);
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

export const benchmark: Benchmark = {
  name: "agent",
  description: "sandbox create → first exec through a real agent, per available runtime, and the agent's own share",
  async run() {
    const rows: BenchRow[] = [];
    const notes: string[] = [
      `Images from ${IMAGES_ROOT}, template ${TEMPLATE}; sequential creates, each destroyed before the next (destroy not timed).`,
      "Agent's share = CreateSandbox round trip − runtime.start() − wait for envd /health; it covers the RPC, state files, the network slot and POST /init.",
    ];
    const image = join(IMAGES_ROOT, "images", TEMPLATE);
    if (!(await exists(join(image, "manifest.json")))) throw new Error(`no image at ${image}; build it first`);
    if (await exists(join(image, "rootfs"))) {
      rows.push(...(await measure("namespace", 20, 2)));
      rows.push(...(await measure("namespace", 20, 2, 1)));
      notes.push(
        "(warm guest): AGENT_WARM_SANDBOXES=1, a guest booted ahead of demand is handed to the create; its boot is off the create's path.",
      );
      if (await runscWorks()) {
        rows.push(...(await measure("gvisor", 10, 1)));
        rows.push(...(await measure("gvisor", 10, 1, 1)));
        rows.push(...(await syscallOverhead()));
        notes.push(
          "gvisor: runsc (Debian 20221219) on the ptrace platform, --network=host in the slot's netns. Syscall-heavy rows: one exec each, in one sandbox per runtime; ratio = gvisor / namespace.",
        );
      } else notes.push("gvisor runtime skipped: runsc missing or its probe sandbox did not start");
    } else notes.push("namespace and gvisor runtimes skipped: the image has no rootfs tree");
    const kernel = join(IMAGES_ROOT, "kernels", "current", "vmlinux");
    if ((await exists(join(image, "rootfs.ext4"))) && (await exists(kernel))) {
      try {
        rows.push(...(await measure("qemu", 3, 0)));
        notes.push("qemu runs under TCG on this machine unless KVM works; expect seconds per boot.");
      } catch (err) {
        notes.push(`qemu runtime failed: ${(err as Error).message}`);
      }
    } else {
      notes.push("qemu runtime skipped: no rootfs.ext4 or kernel in the images root");
    }
    return { title: "Host agent: create to first exec", rows, notes };
  },
};
