import { randomFillSync } from "node:crypto";
import { access, appendFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { GUEST_IP } from "../agent/network/addresses.js";
import { IMAGES_ROOT, readState, TEMPLATE } from "../test/helpers/agent-fixtures.js";
import { startBenchStack } from "./stack.js";
import { type Benchmark, type BenchReport, type BenchRow, summarize } from "./stats.js";

/**
 * Issue 23, transfers: 256 MiB up and down through the edge's REST routes (`files/write` multipart,
 * `files/read`) and E2B's path (envd's `/files` through the edge's sandbox proxy), against curl
 * straight to envd inside the sandbox's netns (the floor), all in the same run on a real stack (edge
 * on Node in this process, agent process, namespace sandbox; needs root and the guest image). The
 * agent's `/proxy` route is measured too, to say which hop loses what. Every client is curl (a C
 * client, so the client's CPU is small and the same for every row); the rounds interleave the paths
 * so a change in the shared machine's load falls on all of them alike. The edge's and the agent's
 * RSS are sampled through the transfers: both must stay flat (no file is ever held whole).
 */

const MiB = 1024 * 1024;
const transferBytes = 256 * MiB;
const rounds = 5;
const goal = 0.6;

interface Path {
  name: string;
  /** Command prefix that runs curl (the floor runs inside the sandbox's netns). */
  prefix: string[];
  upload: string[];
  download: string[];
}

/** One curl transfer; `-w` reports curl's own average speed (bytes/s) and the size moved. */
async function curlRate(prefix: string[], args: string[], direction: "upload" | "download"): Promise<number> {
  const fields = direction === "upload" ? "%{speed_upload} %{size_upload}" : "%{speed_download} %{size_download}";
  const command = [...prefix, "curl", "-sS", "-f", "-o", "/dev/null", "-H", "expect:", "-w", fields, ...args];
  const { stdout } = await execa(command[0] ?? "curl", command.slice(1));
  const [speed, size] = stdout.trim().split(" ").map(Number);
  // A multipart upload is the file plus a small envelope.
  if ((size ?? 0) < transferBytes) throw new Error(`${direction}: curl moved ${size} bytes, not ${transferBytes}`);
  return (speed ?? 0) / MiB;
}

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat. */
async function cpuSeconds(pid: number | "self"): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}
const ticksPerSecond = 100;

/** Resident set of a process in bytes, from /proc (VmRSS). */
async function rssOf(pid: number | "self"): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(status)?.[1];
  return Number(kb ?? 0) * 1024;
}

/** Samples the RSS of the edge (this process) and the agent every 50 ms until stopped; returns the peaks. */
function sampleRss(agentPid: number): { stop(): Promise<{ edge: number; agent: number }> } {
  let edge = 0;
  let agent = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      edge = Math.max(edge, await rssOf("self"));
      agent = Math.max(agent, await rssOf(agentPid).catch(() => 0));
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { edge, agent };
    },
  };
}

const range = (rates: number[]) => {
  const s = summarize(rates);
  return `${s.min.toFixed(0)}–${s.max.toFixed(0)}`;
};

export const benchmark: Benchmark = {
  name: "transfers",
  description:
    "256 MiB up/down via REST and the E2B sandbox proxy vs curl straight to envd in the netns; edge and agent RSS",
  async run(): Promise<BenchReport> {
    const rows: BenchRow[] = [];
    const notes: string[] = [];
    const manifest = join(IMAGES_ROOT, "images", TEMPLATE, "manifest.json");
    const hasImage = await access(manifest).then(
      () => true,
      () => false,
    );
    if (process.getuid?.() !== 0 || !hasImage) {
      throw new Error(`the transfers bench needs root and the guest image (${manifest})`);
    }
    const loadBefore = loadavg();
    const stack = await startBenchStack({ agent: { runtime: "namespace" } });
    const { agent, edge, adminKey } = stack;
    const dataDir = await mkdtemp(join(tmpdir(), "wrenn-bench-transfers-"));
    try {
      const created = await fetch(`${edge.url}/v1/sandboxes`, {
        method: "POST",
        headers: { "x-api-key": adminKey, "content-type": "application/json" },
        body: JSON.stringify({ template: TEMPLATE, timeoutSec: 1800 }),
      });
      if (created.status !== 201) throw new Error(`create: ${created.status} ${await created.text()}`);
      const sb = (await created.json()) as { id: string; envdAccessToken: string };
      const dataFile = join(dataDir, "data.bin");
      // Written in pieces: a 256 MiB Buffer in this process would sit in the edge's RSS figure.
      const piece = Buffer.alloc(16 * MiB);
      await writeFile(dataFile, "");
      for (let written = 0; written < transferBytes; written += piece.length) {
        await appendFile(dataFile, randomFillSync(piece));
      }
      const state = await readState(agent, sb.id);
      const netns = `${agent.netPrefix}-${state.slot?.index ?? 0}`;
      const envdAuth = ["-H", `x-access-token: ${sb.envdAccessToken}`];
      // Each path writes its own file, so no path replaces a file another just wrote in the same round.
      const raw = (base: string, file: string, extra: string[]): Pick<Path, "upload" | "download"> => ({
        upload: [
          ...envdAuth,
          ...extra,
          "-H",
          "content-type: application/octet-stream",
          "-T",
          dataFile,
          "-X",
          "POST",
          `${base}/files?path=${file}`,
        ],
        download: [...envdAuth, ...extra, `${base}/files?path=${file}`],
      });
      const floor: Path = {
        name: "curl ↔ envd in the sandbox's netns (floor)",
        prefix: ["ip", "netns", "exec", netns],
        ...raw(`http://${GUEST_IP}:49983`, "/tmp/floor.bin", []),
      };
      const paths: Path[] = [
        floor,
        {
          name: "agent /proxy (attribution: + veth + agent relay)",
          prefix: [],
          ...raw(`${agent.url}/proxy/${sb.id}/49983`, "/tmp/agent.bin", ["-H", `authorization: Bearer ${agent.token}`]),
        },
        {
          name: "REST files/write (multipart), files/read",
          prefix: [],
          upload: [
            "-H",
            `x-api-key: ${adminKey}`,
            "-F",
            "path=/tmp/rest.bin",
            "-F",
            `file=@${dataFile}`,
            `${edge.url}/v1/sandboxes/${sb.id}/files/write`,
          ],
          download: [
            "-H",
            `x-api-key: ${adminKey}`,
            "-H",
            "content-type: application/json",
            "-d",
            JSON.stringify({ path: "/tmp/rest.bin" }),
            `${edge.url}/v1/sandboxes/${sb.id}/files/read`,
          ],
        },
        {
          name: "E2B SDK's path: envd /files via the edge's sandbox proxy",
          prefix: [],
          ...raw(edge.url, "/tmp/e2b.bin", ["-H", `e2b-sandbox-id: ${sb.id}`, "-H", "e2b-sandbox-port: 49983"]),
        },
      ];
      // One unmeasured round: first writes allocate the files' blocks, first reads warm the page cache.
      for (const p of paths) {
        await curlRate(p.prefix, p.upload, "upload");
        await curlRate(p.prefix, p.download, "download");
      }
      const rssBefore = { edge: await rssOf("self"), agent: await rssOf(agent.pid) };
      const rates = paths.map(() => ({ up: [] as number[], down: [] as number[] }));
      // CPU seconds per transfer of the edge (this process) and the agent, per path and direction.
      const cpu = paths.map(() => ({ up: { edge: 0, agent: 0 }, down: { edge: 0, agent: 0 } }));
      const measured = async (i: number, direction: "up" | "down", p: Path) => {
        const e0 = await cpuSeconds("self");
        const a0 = await cpuSeconds(agent.pid);
        const rate = await curlRate(
          p.prefix,
          direction === "up" ? p.upload : p.download,
          direction === "up" ? "upload" : "download",
        );
        const c = cpu[i]?.[direction];
        if (c) {
          c.edge += ((await cpuSeconds("self")) - e0) / rounds;
          c.agent += ((await cpuSeconds(agent.pid)) - a0) / rounds;
        }
        rates[i]?.[direction].push(rate);
      };
      const sampler = sampleRss(agent.pid);
      const loads: number[] = [];
      try {
        for (let round = 0; round < rounds; round++) {
          for (const [i, p] of paths.entries()) {
            await measured(i, "up", p);
            await measured(i, "down", p);
          }
          loads.push(loadavg()[0] ?? 0);
        }
      } finally {
        const peak = await sampler.stop();
        rows.push(...rssRows(rssBefore, peak));
      }
      const floorUp = summarize(rates[0]?.up ?? []).median;
      const floorDown = summarize(rates[0]?.down ?? []).median;
      const pathRows: BenchRow[] = [];
      for (const [i, p] of paths.entries()) {
        for (const direction of ["up", "down"] as const) {
          const samples = rates[i]?.[direction] ?? [];
          const median = summarize(samples).median;
          const floorRate = direction === "up" ? floorUp : floorDown;
          const isFloor = i === 0;
          const counts = !isFloor && i !== 1;
          pathRows.push({
            name: `${direction === "up" ? "upload" : "download"} 256 MiB, ${p.name} (${range(samples)} MiB/s; CPU s edge ${cpu[i]?.[direction].edge.toFixed(2)}, agent ${cpu[i]?.[direction].agent.toFixed(2)})`,
            unit: "MiB/s",
            value: median,
            n: samples.length,
            ...(isFloor ? {} : { ratio: { value: median / floorRate, against: "vs floor" } }),
            ...(counts ? { goal: `≥ ${goal}× floor` } : {}),
          });
        }
      }
      rows.unshift(...pathRows);
      notes.push(
        `Each row: median of ${rounds} curl transfers (min–max in the name), after one unmeasured round; the ${paths.length} paths interleave in every round, upload then download.`,
        "The REST upload is multipart/form-data (curl -F); the other uploads are envd's raw octet-stream POST. Downloads read back the file the same path wrote.",
        "Edge = this bench process (the edge on Node runs in it, PGlite in memory); agent = the agent process. RSS sampled every 50 ms through the measured rounds. CPU s = CPU seconds per transfer (mean of the measured runs); the edge's includes starting curl from this process (the floor rows show that share). On a loaded machine the CPU figures say more than the rates: a rate moves with whatever else runs, the CPU a transfer costs much less.",
        `Machine load (1-min average): ${loadBefore[0]?.toFixed(2)} before the stack started; ${loads.map((l) => l.toFixed(2)).join(", ")} after each round; ${cpus().length} CPUs shared by every process in the chain (curl, edge, agent, envd) and by whatever else runs.`,
      );
      await fetch(`${edge.url}/v1/sandboxes/${sb.id}`, { method: "DELETE", headers: { "x-api-key": adminKey } });
    } finally {
      await rm(dataDir, { recursive: true, force: true });
      await stack.close();
    }
    return { title: "Transfers: 256 MiB through the edge vs curl straight to envd (real stack)", rows, notes };
  },
};

function rssRows(before: { edge: number; agent: number }, peak: { edge: number; agent: number }): BenchRow[] {
  const mib = (b: number) => b / MiB;
  return [
    {
      name: `edge process peak RSS during the transfers (before: ${mib(before.edge).toFixed(0)} MiB)`,
      unit: "MiB",
      value: mib(peak.edge),
      goal: "flat: growth ≪ 256 MiB",
    },
    {
      name: `agent process peak RSS during the transfers (before: ${mib(before.agent).toFixed(0)} MiB)`,
      unit: "MiB",
      value: mib(peak.agent),
      goal: "flat: growth ≪ 256 MiB",
    },
  ];
}
