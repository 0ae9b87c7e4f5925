import { access } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { HostAgentService } from "../proto/gen/hostagent/v1/hostagent_pb.js";
import { IMAGES_ROOT, TEMPLATE } from "../test/helpers/agent-fixtures.js";
import { startBenchStack } from "./stack.js";
import { type Benchmark, type BenchReport, type BenchRow, type Summary, summarize } from "./stats.js";

/**
 * A large exec answer (issue 23): `POST /v1/sandboxes/{id}/exec` returning 16 MiB of stdout, once as
 * text (valid UTF-8, sent as a JSON string) and once as binary (not UTF-8, sent base64), beside the
 * floor: a REST download (`files/read`) of a 16 MiB file in the same sandbox. Each is timed from the
 * request to the last byte of the answer, on the real stack (edge on Node + PGlite, namespace agent,
 * guest image; needs root). Attribution rows time the agent's Exec RPC alone (no edge).
 */

const MiB = 1024 * 1024;
const outputBytes = 16 * MiB;
const runs = Number(process.env.WRENN_BENCH_EXEC_OUTPUT_RUNS ?? 7);
const goalMs = 500;

/** The shell commands that print 16 MiB: 'a's (valid UTF-8) and 0xff bytes (never UTF-8, so base64). */
const textCommand = `head -c ${outputBytes} /dev/zero | tr '\\0' a`;
const binaryCommand = `head -c ${outputBytes} /dev/zero | tr '\\0' '\\377'`;
const filePath = "/tmp/exec-output-bench.bin";

const fmt = (ms: number) => (ms >= 100 ? ms.toFixed(0) : ms.toFixed(1));
const range = (s: Summary) => `${fmt(s.median)} ms (min–max ${fmt(s.min)}–${fmt(s.max)}, n ${s.n})`;

/** `runs` timings of `fn` after one unmeasured warm-up; `check` validates the warm-up's answer. */
async function sample(fn: () => Promise<Uint8Array>, check: (body: Uint8Array) => void): Promise<number[]> {
  check(await fn());
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

export const benchmark: Benchmark = {
  name: "exec-output",
  description: "exec returning 16 MiB (text, base64) against a 16 MiB REST file download",
  async run(): Promise<BenchReport> {
    const rows: BenchRow[] = [];
    const notes: string[] = [];
    const manifest = join(IMAGES_ROOT, "images", TEMPLATE, "manifest.json");
    const hasImage = await access(manifest).then(
      () => true,
      () => false,
    );
    if (process.getuid?.() !== 0 || !hasImage) {
      notes.push(`skipped: needs root and the guest image (${manifest}).`);
      return { title: "Exec output, 16 MiB (bench/exec-output.ts)", rows, notes };
    }
    const loadBefore = loadavg();
    const stack = await startBenchStack({ agent: { runtime: "namespace" } });
    const { agent, edge, adminKey } = stack;
    try {
      const api = async (path: string, json: unknown): Promise<Uint8Array> => {
        const res = await fetch(`${edge.url}${path}`, {
          method: "POST",
          headers: { "x-api-key": adminKey, "content-type": "application/json" },
          body: JSON.stringify(json),
        });
        const body = new Uint8Array(await res.arrayBuffer());
        if (res.status !== 200 && res.status !== 201) {
          throw new Error(`${path}: ${res.status} ${Buffer.from(body.subarray(0, 300)).toString()}`);
        }
        return body;
      };
      const created = JSON.parse(
        Buffer.from(await api("/v1/sandboxes", { template: TEMPLATE, timeoutSec: 1800 })).toString(),
      ) as { id: string };
      const id = created.id;
      const exec = (cmd: string) => api(`/v1/sandboxes/${id}/exec`, { cmd });
      const parsed = (body: Uint8Array) =>
        JSON.parse(Buffer.from(body).toString()) as { stdout: string; encoding: string; truncated: boolean };
      await exec(`${binaryCommand} > ${filePath}`);

      const text = summarize(
        await sample(
          () => exec(textCommand),
          (body) => {
            const r = parsed(body);
            if (r.encoding !== "utf-8" || r.stdout.length !== outputBytes || r.truncated) {
              throw new Error(`text exec: ${r.encoding}, ${r.stdout.length} chars, truncated ${r.truncated}`);
            }
          },
        ),
      );
      const binary = summarize(
        await sample(
          () => exec(binaryCommand),
          (body) => {
            const r = parsed(body);
            const bytes = Buffer.from(r.stdout, "base64");
            if (r.encoding !== "base64" || bytes.length !== outputBytes || bytes[0] !== 0xff || r.truncated) {
              throw new Error(`binary exec: ${r.encoding}, ${bytes.length} bytes, truncated ${r.truncated}`);
            }
          },
        ),
      );
      const download = summarize(
        await sample(
          () => api(`/v1/sandboxes/${id}/files/read`, { path: filePath }),
          (body) => {
            if (body.length !== outputBytes) throw new Error(`download: ${body.length} bytes`);
          },
        ),
      );
      // Attribution: the agent's Exec RPC alone (agent → envd → agent, output collected), without the
      // edge. Like the edge's client, it offers no compression (the agent would gzip 16 MiB otherwise).
      const agentClient = createClient(
        HostAgentService,
        createConnectTransport({
          baseUrl: agent.url,
          httpVersion: "1.1",
          useBinaryFormat: true,
          acceptCompression: [],
          interceptors: [
            (next) => (req) => {
              req.header.set("authorization", `Bearer ${agent.token}`);
              return next(req);
            },
          ],
        }),
      );
      const agentExec = (cmd: string) => async () => {
        const res = await agentClient.exec({ sandboxId: id, cmd: "/bin/bash", args: ["-l", "-c", cmd] });
        return res.stdout;
      };
      const agentText = summarize(
        await sample(agentExec(textCommand), (b) => {
          if (b.length !== outputBytes) throw new Error(`agent exec: ${b.length} bytes`);
        }),
      );
      const agentBinary = summarize(
        await sample(agentExec(binaryCommand), (b) => {
          if (b.length !== outputBytes) throw new Error(`agent exec: ${b.length} bytes`);
        }),
      );
      const loadAfter = loadavg();

      rows.push({ name: "REST files/read of a 16 MiB file (floor)", unit: "ms", value: download.median, n: runs });
      for (const [name, s] of [
        ["REST exec, 16 MiB stdout as text (utf-8)", text],
        ["REST exec, 16 MiB stdout as binary (base64)", binary],
      ] as const) {
        rows.push({
          name,
          unit: "ms",
          value: s.median,
          p95: s.p95,
          n: runs,
          ratio: { value: s.median / download.median, against: "vs file download" },
          goal: `≤ ${goalMs} ms`,
        });
      }
      rows.push({
        name: "agent Exec RPC alone, 16 MiB text (attribution)",
        unit: "ms",
        value: agentText.median,
        n: runs,
      });
      rows.push({
        name: "agent Exec RPC alone, 16 MiB binary (attribution)",
        unit: "ms",
        value: agentBinary.median,
        n: runs,
      });
      notes.push(
        `medians with min–max: file download ${range(download)}; exec text ${range(text)}; exec base64 ${range(binary)}; agent Exec text ${range(agentText)}; agent Exec binary ${range(agentBinary)}.`,
        `goal (issue 23): ≤ ${goalMs} ms for either exec; text ${text.median <= goalMs ? "meets it" : `misses it by ${fmt(text.median - goalMs)} ms`}, base64 ${binary.median <= goalMs ? "meets it" : `misses it by ${fmt(binary.median - goalMs)} ms`}.`,
        `load average (1/5/15 min) before ${loadBefore.map((l) => l.toFixed(2)).join(" / ")}, after ${loadAfter.map((l) => l.toFixed(2)).join(" / ")}, on ${cpus().length} CPUs; the machine may be shared, so figures are provisional.`,
        `each row: one unmeasured warm-up, then ${runs} runs, timed from the request to the answer's last byte (the client reads the body, in the edge's process); text is \`${textCommand}\`, binary \`${binaryCommand}\`.`,
      );
    } finally {
      await stack.close();
    }
    return { title: "Exec output, 16 MiB (bench/exec-output.ts)", rows, notes };
  },
};
