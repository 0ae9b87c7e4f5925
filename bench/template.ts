import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { type AgentProcess, startAgentProcess } from "../test/helpers/agent-process.js";
import { type Benchmark, type BenchRow, summarize } from "./stats.js";

/**
 * Template builds on a real agent (namespace runtime, the installed `minimal` template): a cold build of
 * ENV, WORKDIR, COPY and two RUN steps (each round's steps differ, so nothing is cached), the same build
 * again (every step from the cache), and create → first exec for a template with a start command (a
 * Python HTTP server and a ready command that fetches from it) against the same template without one.
 * The namespace runtime keeps no memory, so the start command runs at each create (issue 19).
 */

const ROUNDS = 3;
const ROOT = "/var/lib/wrenn";

function msRow(name: string, samples: number[], extra: Partial<BenchRow> = {}): BenchRow {
  const s = summarize(samples);
  return {
    name: `${name} (min ${s.min.toFixed(0)}, max ${s.max.toFixed(0)})`,
    unit: "ms",
    value: s.median,
    p95: s.p95,
    n: s.n,
    ...extra,
  };
}

async function removeTemplate(name: string): Promise<void> {
  await unlink(join(ROOT, "images", name)).catch(() => {});
  for (const entry of await readdir(join(ROOT, "images", ".versions")).catch(() => [] as string[])) {
    if (entry.startsWith(`${name}-`))
      await rm(join(ROOT, "images", ".versions", entry), { recursive: true, force: true });
  }
}

export const benchmark: Benchmark = {
  name: "template",
  description: "template builds on the agent: cold and cached build, create → first exec with a start command",
  async run() {
    const tag = randomBytes(3).toString("hex");
    const withStart = `bench-tpl-${tag}`;
    const without = `bench-tpl-${tag}-plain`;
    const scratch = await mkdtemp(join(tmpdir(), "wrenn-bench-template-"));
    let agent: AgentProcess | undefined;
    try {
      await mkdir(join(scratch, "app"), { recursive: true });
      await writeFile(join(scratch, "app", "index.html"), "<h1>bench</h1>\n");
      await execa("tar", ["-czf", join(scratch, "app.tgz"), "-C", scratch, "app"]);
      const archive = await readFile(join(scratch, "app.tgz"));
      const hash = createHash("sha256").update(archive).digest("hex");
      agent = await startAgentProcess({ rootDir: ROOT, runtime: "namespace" });
      const c = agent.client;
      const steps = (round: string) => [
        { type: "ENV", args: ["ROUND", round] },
        { type: "WORKDIR", args: ["/home/user/site"] },
        { type: "COPY", args: ["app", "/home/user/site"], filesHash: hash },
        { type: "RUN", args: ['echo "round $ROUND" > round.txt && ls -la'] },
        { type: "RUN", args: ["mkdir -p /opt/bench && date > /opt/bench/built", "root"] },
      ];
      let n = 0;
      const build = async (template: string, round: string, startCmd = "", readyCmd = "") => {
        const buildId = `bench-${tag}-${n++}`;
        const t = performance.now();
        await c.startTemplateBuild({
          buildId,
          template,
          fromTemplate: "minimal",
          steps: steps(round),
          files: { [hash]: archive },
          startCmd,
          readyCmd,
        });
        for (;;) {
          const b = await c.getTemplateBuild({ buildId, logsOffset: 1_000_000 });
          if (b.status === "error") throw new Error(`build failed: ${b.errorMessage}`);
          if (b.status === "ready") return { ms: performance.now() - t, cached: b.cachedSteps.length };
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      const cold: number[] = [];
      const cached: number[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        const round = `${tag}-${i}`;
        const first = await build(without, round);
        if (first.cached !== 0) throw new Error("a cold build found its steps cached");
        cold.push(first.ms);
        const again = await build(without, round);
        if (again.cached !== 5) throw new Error(`the repeated build took ${again.cached} of 5 steps from the cache`);
        cached.push(again.ms);
      }
      await build(withStart, `${tag}-0`, "python3 -m http.server 8000", "curl -sf http://127.0.0.1:8000/ >/dev/null");
      const createExec = async (template: string, cmd: string) => {
        const samples: number[] = [];
        for (let i = 0; i < ROUNDS; i++) {
          const sandboxId = randomBytes(10).toString("hex");
          const t = performance.now();
          await c.createSandbox({ sandboxId, template });
          const r = await c.exec({ sandboxId, cmd: "/bin/bash", args: ["-c", cmd] });
          samples.push(performance.now() - t);
          if (r.exitCode !== 0)
            throw new Error(`first exec in ${template} failed: ${Buffer.from(r.stderr).toString()}`);
          await c.destroySandbox({ sandboxId });
        }
        return samples;
      };
      const plainMs = await createExec(without, "cat round.txt");
      const startMs = await createExec(withStart, "curl -sf http://127.0.0.1:8000/round.txt");
      const coldMedian = summarize(cold).median;
      return {
        title: "Template builds (agent, namespace runtime)",
        rows: [
          msRow("cold build: ENV, WORKDIR, COPY, 2× RUN from minimal", cold),
          msRow("same build again (every step cached)", cached, {
            ratio: { value: summarize(cached).median / coldMedian, against: "cold build" },
            goal: "≤ 0.2× cold",
          }),
          msRow("create → first exec, template without a start command", plainMs),
          msRow("create → first exec (server answers), template with start command + ready command", startMs, {
            ratio: { value: summarize(startMs).median / summarize(plainMs).median, against: "without start command" },
          }),
        ],
        notes: [
          `load average at the end: ${loadavg()
            .map((l) => l.toFixed(1))
            .join(", ")} (2 cores shared with other work: provisional)`,
          "No running snapshot on this runtime: the start command runs at each create, which answers once the ready command passes.",
        ],
      };
    } finally {
      await agent?.stop();
      await removeTemplate(withStart);
      await removeTemplate(without);
      await rm(scratch, { recursive: true, force: true });
    }
  },
};
