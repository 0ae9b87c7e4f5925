import { randomBytes } from "node:crypto";
import { Sandbox } from "e2b";
import { startBenchStack } from "./stack.js";
import { type Benchmark, type BenchReport, type BenchRow, summarize, timeRuns } from "./stats.js";

/**
 * The E2B surface on the real stack (edge on Node + PGlite, namespace agent, guest image; needs root):
 * the official SDK's create, command and pause/resume latencies, and what the edge's sandbox proxy
 * adds over calling the agent's `/proxy` route directly — per request (envd `/health`) and in
 * throughput (64 MiB through envd's `/files`).
 */

const MiB = 1024 * 1024;
const transferBytes = 64 * MiB;

function mibPerSecond(bytes: number, ms: number): number {
  return bytes / MiB / (ms / 1000);
}

async function drain(res: Response): Promise<number> {
  let total = 0;
  const reader = res.body?.getReader();
  if (!reader) return 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return total;
    total += value.byteLength;
  }
}

export const benchmark: Benchmark = {
  name: "e2b",
  description: "official e2b SDK on Wrenn: create/run/pause/resume latency; edge proxy overhead vs the agent's /proxy",
  async run(): Promise<BenchReport> {
    const rows: BenchRow[] = [];
    const notes: string[] = [];
    const stack = await startBenchStack({ agent: { runtime: "namespace" } });
    const { agent, edge, sdkOptions: opts } = stack;
    const sandboxes: Sandbox[] = [];
    try {
      const createMs = await timeRuns(5, 1, async () => {
        sandboxes.push(await Sandbox.create({ ...opts, timeoutMs: 600_000 }));
      });
      const created = summarize(createMs);
      rows.push({ name: "Sandbox.create (namespace)", unit: "ms", value: created.median, p95: created.p95, n: 5 });

      const sbx = sandboxes[0];
      if (!sbx) throw new Error("no sandbox");
      const run = summarize(await timeRuns(30, 3, () => sbx.commands.run("true")));
      rows.push({ name: "commands.run('true')", unit: "ms", value: run.median, p95: run.p95, n: 30 });

      const viaEdge = summarize(
        await timeRuns(200, 20, async () => {
          const res = await fetch(`${edge.url}/health`, {
            headers: { "E2b-Sandbox-Id": sbx.sandboxId, "E2b-Sandbox-Port": "49983" },
          });
          await res.arrayBuffer();
        }),
      );
      const direct = summarize(
        await timeRuns(200, 20, async () => {
          const res = await fetch(`${agent.url}/proxy/${sbx.sandboxId}/49983/health`, {
            headers: { authorization: `Bearer ${agent.token}` },
          });
          await res.arrayBuffer();
        }),
      );
      rows.push({ name: "envd /health via agent /proxy", unit: "ms", value: direct.median, p95: direct.p95, n: 200 });
      rows.push({
        name: "envd /health via edge proxy",
        unit: "ms",
        value: viaEdge.median,
        p95: viaEdge.p95,
        n: 200,
        ratio: { value: viaEdge.median / direct.median, against: "agent /proxy" },
      });

      const data = randomBytes(transferBytes);
      const token = (sbx as unknown as { envdAccessToken?: string }).envdAccessToken ?? "";
      const upload = async (base: string, headers: Record<string, string>, path: string) => {
        const t0 = performance.now();
        const res = await fetch(`${base}/files?path=${encodeURIComponent(path)}`, {
          method: "POST",
          headers: { ...headers, "x-access-token": token, "content-type": "application/octet-stream" },
          body: data,
        });
        await res.arrayBuffer();
        if (!res.ok) throw new Error(`upload ${res.status}`);
        return performance.now() - t0;
      };
      const download = async (base: string, headers: Record<string, string>, path: string) => {
        const t0 = performance.now();
        const res = await fetch(`${base}/files?path=${encodeURIComponent(path)}`, {
          headers: { ...headers, "x-access-token": token },
        });
        const n = await drain(res);
        if (n !== transferBytes) throw new Error(`download got ${n} bytes`);
        return performance.now() - t0;
      };
      const edgeHeaders = { "E2b-Sandbox-Id": sbx.sandboxId, "E2b-Sandbox-Port": "49983" };
      const agentBase = `${agent.url}/proxy/${sbx.sandboxId}/49983`;
      const agentHeaders = { authorization: `Bearer ${agent.token}` };
      const upDirect = [] as number[];
      const upEdge = [] as number[];
      const downDirect = [] as number[];
      const downEdge = [] as number[];
      for (let i = 0; i < 3; i++) {
        upDirect.push(await upload(agentBase, agentHeaders, "/tmp/direct.bin"));
        upEdge.push(await upload(edge.url, edgeHeaders, "/tmp/edge.bin"));
        downDirect.push(await download(agentBase, agentHeaders, "/tmp/direct.bin"));
        downEdge.push(await download(edge.url, edgeHeaders, "/tmp/edge.bin"));
      }
      const rate = (ms: number[]) => mibPerSecond(transferBytes, summarize(ms).median);
      rows.push({ name: "64 MiB upload via agent /proxy", unit: "MiB/s", value: rate(upDirect), n: 3 });
      rows.push({
        name: "64 MiB upload via edge proxy",
        unit: "MiB/s",
        value: rate(upEdge),
        n: 3,
        ratio: { value: rate(upEdge) / rate(upDirect), against: "agent /proxy" },
      });
      rows.push({ name: "64 MiB download via agent /proxy", unit: "MiB/s", value: rate(downDirect), n: 3 });
      rows.push({
        name: "64 MiB download via edge proxy",
        unit: "MiB/s",
        value: rate(downEdge),
        n: 3,
        ratio: { value: rate(downEdge) / rate(downDirect), against: "agent /proxy" },
      });

      const pauseMs: number[] = [];
      const resumeMs: number[] = [];
      for (let i = 0; i < 3; i++) {
        let t0 = performance.now();
        await sbx.pause();
        pauseMs.push(performance.now() - t0);
        t0 = performance.now();
        await Sandbox.connect(sbx.sandboxId, opts);
        resumeMs.push(performance.now() - t0);
      }
      rows.push({ name: "sbx.pause() (namespace: cgroup freeze)", unit: "ms", value: summarize(pauseMs).median, n: 3 });
      rows.push({ name: "Sandbox.connect() of a paused sandbox", unit: "ms", value: summarize(resumeMs).median, n: 3 });
      notes.push(
        "Uploads are envd octet-stream POSTs; each direction is measured end to end (client → edge → agent → envd → guest disk).",
        "The edge proxy resolves the sandbox per request (one PGlite read and one token decryption).",
      );
    } finally {
      await Promise.allSettled(sandboxes.map((s) => s.kill()));
      await stack.close();
    }
    return { title: "E2B surface and sandbox proxy (real stack)", rows, notes };
  },
};
