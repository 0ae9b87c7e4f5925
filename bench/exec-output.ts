import { readFileSync } from "node:fs";
import { access, readFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { HostAgentService } from "../proto/gen/hostagent/v1/hostagent_pb.js";
import { IMAGES_ROOT, readState, TEMPLATE } from "../test/helpers/agent-fixtures.js";
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

/** CPU milliseconds a process used so far; with `children`, also its waited-for children's. */
function processCpuMs(pid: number, children = false): number {
  const fields = (readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1] ?? "").split(" ");
  const ticks = [11, 12, ...(children ? [13, 14] : [])].reduce((sum, i) => sum + Number(fields[i] ?? 0), 0);
  return ticks * 10; // USER_HZ is 100 on Linux.
}

/** CPU time per run, by layer: what each process spent, so a loaded machine skews it less than wall time. */
interface CpuPerRun {
  /** envd and the command it ran (bash, head, tr: children envd waited for). */
  guest?: number;
  agent: number;
  /** The edge and the bench's client share this process. */
  edgeAndClient: number;
}

interface Sampled {
  ms: number[];
  cpu: CpuPerRun;
}

/**
 * `runs` timings of `fn` after one unmeasured warm-up (`check` validates the warm-up's answer),
 * with the CPU each layer used over the timed runs.
 */
async function sample(
  pids: { agent: number; envd?: number },
  fn: () => Promise<Uint8Array>,
  check: (body: Uint8Array) => void,
): Promise<Sampled> {
  check(await fn());
  const cpuNow = () => ({
    guest: pids.envd === undefined ? undefined : processCpuMs(pids.envd, true),
    agent: processCpuMs(pids.agent),
    edgeAndClient: (process.cpuUsage().user + process.cpuUsage().system) / 1000,
  });
  const before = cpuNow();
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  const after = cpuNow();
  const perRun = (a: number | undefined, b: number | undefined) =>
    a === undefined || b === undefined ? undefined : (b - a) / runs;
  return {
    ms,
    cpu: {
      guest: perRun(before.guest, after.guest),
      agent: perRun(before.agent, after.agent) ?? 0,
      edgeAndClient: perRun(before.edgeAndClient, after.edgeAndClient) ?? 0,
    },
  };
}

const cpuText = (c: CpuPerRun) =>
  `${c.guest === undefined ? "" : `envd+command ${fmt(c.guest)}, `}agent ${fmt(c.agent)}, edge+client ${fmt(c.edgeAndClient)}`;

/** The pid of the sandbox's envd: the node process in its cgroup running envd. */
async function envdPid(cgroup: string | undefined): Promise<number | undefined> {
  if (cgroup === undefined) return undefined;
  const procs = await readFile(`${cgroup}/cgroup.procs`, "utf8").catch(() => "");
  for (const pid of procs.split("\n").filter(Boolean).map(Number)) {
    // envd is the guest's node process (its command line names envd's bundle or snapshot).
    const comm = (await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "")).trim();
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (comm === "node" && /envd/.test(cmdline)) return pid;
  }
  return undefined;
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
      const state = await readState(agent, id);
      const cgroups = state.handle?.data.cgroups ?? {};
      const pids = { agent: agent.pid, envd: await envdPid(cgroups.cpu ?? cgroups.memory) };

      const text = await sample(
        pids,
        () => exec(textCommand),
        (body) => {
          const r = parsed(body);
          if (r.encoding !== "utf-8" || r.stdout.length !== outputBytes || r.truncated) {
            throw new Error(`text exec: ${r.encoding}, ${r.stdout.length} chars, truncated ${r.truncated}`);
          }
        },
      );
      const binary = await sample(
        pids,
        () => exec(binaryCommand),
        (body) => {
          const r = parsed(body);
          const bytes = Buffer.from(r.stdout, "base64");
          if (r.encoding !== "base64" || bytes.length !== outputBytes || bytes[0] !== 0xff || r.truncated) {
            throw new Error(`binary exec: ${r.encoding}, ${bytes.length} bytes, truncated ${r.truncated}`);
          }
        },
      );
      const download = await sample(
        pids,
        () => api(`/v1/sandboxes/${id}/files/read`, { path: filePath }),
        (body) => {
          if (body.length !== outputBytes) throw new Error(`download: ${body.length} bytes`);
        },
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
      const checkLength = (b: Uint8Array) => {
        if (b.length !== outputBytes) throw new Error(`agent exec: ${b.length} bytes`);
      };
      const agentText = await sample(pids, agentExec(textCommand), checkLength);
      const agentBinary = await sample(pids, agentExec(binaryCommand), checkLength);
      const loadAfter = loadavg();

      const floor = summarize(download.ms);
      rows.push({ name: "REST files/read of a 16 MiB file (floor)", unit: "ms", value: floor.median, n: runs });
      const measured: [string, Sampled][] = [
        ["REST exec, 16 MiB stdout as text (utf-8)", text],
        ["REST exec, 16 MiB stdout as binary (base64)", binary],
      ];
      for (const [name, sampled] of measured) {
        const s = summarize(sampled.ms);
        rows.push({
          name,
          unit: "ms",
          value: s.median,
          p95: s.p95,
          n: runs,
          ratio: { value: s.median / floor.median, against: "vs file download" },
          goal: `≤ ${goalMs} ms`,
        });
      }
      for (const [name, sampled] of [
        ["agent Exec RPC alone, 16 MiB text (attribution)", agentText],
        ["agent Exec RPC alone, 16 MiB binary (attribution)", agentBinary],
      ] as const) {
        rows.push({ name, unit: "ms", value: summarize(sampled.ms).median, n: runs });
      }
      const textMs = summarize(text.ms).median;
      const binaryMs = summarize(binary.ms).median;
      const all: [string, Sampled][] = [
        ["file download", download],
        ["exec text", text],
        ["exec base64", binary],
        ["agent Exec text", agentText],
        ["agent Exec binary", agentBinary],
      ];
      notes.push(
        `medians with min–max: ${all.map(([name, sampled]) => `${name} ${range(summarize(sampled.ms))}`).join("; ")}.`,
        `CPU ms per run by process (less skewed by a loaded machine than wall time): ${all.map(([name, sampled]) => `${name}: ${cpuText(sampled.cpu)}`).join("; ")}.`,
        `goal (issue 23): ≤ ${goalMs} ms for either exec; text ${textMs <= goalMs ? "meets it" : `misses it by ${fmt(textMs - goalMs)} ms`}, base64 ${binaryMs <= goalMs ? "meets it" : `misses it by ${fmt(binaryMs - goalMs)} ms`}.`,
        `load average (1/5/15 min) before ${loadBefore.map((l) => l.toFixed(2)).join(" / ")}, after ${loadAfter.map((l) => l.toFixed(2)).join(" / ")}, on ${cpus().length} CPUs; the machine may be shared, so figures are provisional.`,
        `each row: one unmeasured warm-up, then ${runs} runs, timed from the request to the answer's last byte (the client reads the body, in the edge's process); text is \`${textCommand}\`, binary \`${binaryCommand}\`.`,
      );
    } finally {
      await stack.close();
    }
    return { title: "Exec output, 16 MiB (bench/exec-output.ts)", rows, notes };
  },
};
