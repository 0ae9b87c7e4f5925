import { randomFillSync } from "node:crypto";
import { access, mkdtemp, rm, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { createServer, type Server } from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { serve } from "@hono/node-server";
import { execa } from "execa";
import { GUEST_IP } from "../agent/network/addresses.js";
import { Process } from "../proto/gen/envd/process/process_pb.js";
import { IMAGES_ROOT, readState, slotAddress, TEMPLATE } from "../test/helpers/agent-fixtures.js";
import { addFakeHost, createEdgeHarness } from "../test/helpers/edge-app.js";
import { startPostgres } from "../test/helpers/postgres.js";
import { startBenchStack } from "./stack.js";
import { type Benchmark, type BenchReport, type BenchRow, summarize, timeRuns } from "./stats.js";

/**
 * The edge's overhead: (1) GET /v1/sandboxes/{id} against a bare Hono route on the same server,
 * (2) exec through REST against calling envd directly, (3) 256 MiB upload and download through REST
 * against a loopback TCP copy. (1) uses the in-memory agent; (2) and (3) need root and the guest image.
 */

const loadSeconds = 5;
const concurrency = 32;
const transferBytes = 256 * 1024 * 1024;
const MiB = 1024 * 1024;

// The load generator runs on its own thread, so the server's event loop is not also the client's.
const loadWorkerSource = `
const { parentPort, workerData } = require("node:worker_threads");
(async () => {
  const { url, headers, concurrency, durationMs } = workerData;
  const end = Date.now() + durationMs;
  let n = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (Date.now() < end) {
      const res = await fetch(url, { headers });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error("status " + res.status + " from " + url);
      n++;
    }
  }));
  parentPort.postMessage({ n });
})().catch((err) => parentPort.postMessage({ error: String(err) }));
`;

function requestsPerSecond(url: string, headers: Record<string, string>, seconds: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(loadWorkerSource, {
      eval: true,
      workerData: { url, headers, concurrency, durationMs: seconds * 1000 },
    });
    worker.once("message", (msg: { n?: number; error?: string }) => {
      void worker.terminate();
      if (msg.error !== undefined) reject(new Error(msg.error));
      else resolve((msg.n ?? 0) / seconds);
    });
    worker.once("error", reject);
  });
}

async function routeThroughput(rows: BenchRow[], database: "pglite" | "postgres"): Promise<void> {
  const pg = database === "postgres" ? await startPostgres() : undefined;
  const harness = await createEdgeHarness({
    ...(pg ? { databaseUrl: pg.url } : {}),
    extendApp: (app) => {
      app.get("/bench/bare", (c) => c.json({ ok: true }));
    },
  });
  const server = serve({ fetch: harness.app.fetch, port: 0, hostname: "127.0.0.1" });
  try {
    await new Promise<void>((resolve) => server.once("listening", () => resolve()));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await addFakeHost(harness);
    const team = await harness.newTeam();
    const created = await harness.request("POST", "/v1/sandboxes", { key: team.key, json: {} });
    const { id } = (await created.json()) as { id: string };
    const headers = { "x-api-key": team.key };
    await requestsPerSecond(`${base}/bench/bare`, {}, 1);
    await requestsPerSecond(`${base}/v1/sandboxes/${id}`, headers, 1);
    const bare = await requestsPerSecond(`${base}/bench/bare`, {}, loadSeconds);
    const get = await requestsPerSecond(`${base}/v1/sandboxes/${id}`, headers, loadSeconds);
    const label = database === "pglite" ? "PGlite in process" : "PostgreSQL 15 via node-postgres";
    rows.push({ name: `bare Hono route (same server, ${database} run)`, unit: "req/s", value: bare });
    rows.push({
      name: `GET /v1/sandboxes/{id} (auth + read, ${label})`,
      unit: "req/s",
      value: get,
      ratio: { value: get / bare, against: "vs bare route" },
      goal: "≥ 0.5×",
    });
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await harness.close();
    await pg?.stop();
  }
}

// Transfer clients also run on their own thread, so they do not take CPU from the server under test.
const transferWorkerSource = `
const { parentPort, workerData } = require("node:worker_threads");
const net = require("node:net");
(async () => {
  const t = workerData;
  const t0 = performance.now();
  let bytes = 0;
  if (t.kind === "upload") {
    const payload = new Uint8Array(t.bytes);
    for (let i = 0; i < payload.length; i += 4096) payload[i] = i & 0xff;
    const form = new FormData();
    if (t.path) form.set("path", t.path);
    form.set("file", new Blob([payload]), "bench.bin");
    const start = performance.now();
    const res = await fetch(t.url, { method: "POST", headers: t.headers, body: form });
    const text = await res.text();
    if (res.status !== 200) throw new Error("upload " + res.status + " " + text.slice(0, 200));
    bytes = t.bytes;
    parentPort.postMessage({ seconds: (performance.now() - start) / 1000, bytes });
    return;
  }
  if (t.kind === "download") {
    const res = await fetch(t.url, { method: t.method, headers: t.headers, body: t.body });
    if (res.status !== 200) throw new Error("download " + res.status);
    for await (const chunk of res.body) bytes += chunk.length;
  } else if (t.kind === "tcp") {
    const chunk = new Uint8Array(1024 * 1024);
    await new Promise((resolve, reject) => {
      const socket = net.connect(t.port, "127.0.0.1");
      socket.on("error", reject);
      socket.on("close", resolve);
      const pump = () => {
        while (bytes < t.bytes) {
          bytes += chunk.length;
          if (!socket.write(chunk)) return void socket.once("drain", pump);
        }
        socket.end();
      };
      socket.on("connect", pump);
      socket.resume();
    });
  }
  parentPort.postMessage({ seconds: (performance.now() - t0) / 1000, bytes });
})().catch((err) => parentPort.postMessage({ error: String(err) }));
`;

type TransferTask =
  | { kind: "upload"; url: string; headers: Record<string, string>; path?: string; bytes: number }
  | { kind: "download"; url: string; method: string; headers: Record<string, string>; body?: string }
  | { kind: "tcp"; port: number; bytes: number };

/** Runs one transfer on a worker thread; returns MiB/s and the bytes moved. */
function transfer(task: TransferTask): Promise<{ rate: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(transferWorkerSource, { eval: true, workerData: task });
    worker.once("message", (msg: { seconds?: number; bytes?: number; error?: string }) => {
      void worker.terminate();
      if (msg.error !== undefined) reject(new Error(msg.error));
      else resolve({ rate: (msg.bytes ?? 0) / MiB / (msg.seconds ?? 1), bytes: msg.bytes ?? 0 });
    });
    worker.once("error", reject);
  });
}

/** MiB/s of pushing `bytes` through a loopback TCP connection (sender on a worker) into a discarding reader. */
async function loopbackCopy(bytes: number): Promise<number> {
  const server: Server = createServer((socket) => {
    socket.on("data", () => {});
    socket.on("end", () => socket.end());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  try {
    const { port } = server.address() as AddressInfo;
    return (await transfer({ kind: "tcp", port, bytes })).rate;
  } finally {
    server.close();
  }
}

/** One hop of the transfer chain, reached with curl (a C client, so the client's CPU stays small). */
interface Hop {
  name: string;
  /** Command prefix that runs curl (e.g. inside the sandbox's netns). */
  prefix: string[];
  upload: string[];
  download: string[];
}

const curlRuns = 3;

/** Median MiB/s of `curlRuns` curl transfers; `-w` reports curl's own average speed in bytes/s. */
async function curlRate(prefix: string[], args: string[], field: "speed_upload" | "speed_download"): Promise<number> {
  const rates: number[] = [];
  for (let i = 0; i < curlRuns; i++) {
    const command = [...prefix, "curl", "-sS", "-f", "-o", "/dev/null", "-H", "expect:", "-w", `%{${field}}`, ...args];
    const { stdout } = await execa(command[0] ?? "curl", command.slice(1));
    rates.push(Number(stdout) / MiB);
  }
  return summarize(rates).median;
}

/**
 * The same 256 MiB both ways at each hop, from the guest outwards: envd inside the sandbox's netns,
 * the slot address (veth and the slot's nft rules), the agent's /proxy route, and the REST API.
 * Each row's ratio is against the hop before it, so the table shows where the rate is lost.
 */
async function hopRows(rows: BenchRow[], hops: Hop[], tcp: number): Promise<void> {
  let previous: { up: number; down: number } | undefined;
  for (const hop of hops) {
    const up = await curlRate(hop.prefix, hop.upload, "speed_upload");
    const down = await curlRate(hop.prefix, hop.download, "speed_download");
    for (const [direction, rate, before] of [
      ["upload", up, previous?.up],
      ["download", down, previous?.down],
    ] as const) {
      rows.push({
        name: `curl ${direction} 256 MiB, ${hop.name}`,
        unit: "MiB/s",
        value: rate,
        ratio:
          before !== undefined
            ? { value: rate / before, against: "vs the hop before" }
            : { value: rate / tcp, against: "vs TCP copy" },
      });
    }
    previous = { up, down };
  }
}

async function realAgentNumbers(rows: BenchRow[], notes: string[]): Promise<void> {
  const manifest = join(IMAGES_ROOT, "images", TEMPLATE, "manifest.json");
  const hasImage = await access(manifest).then(
    () => true,
    () => false,
  );
  if (process.getuid?.() !== 0 || !hasImage) {
    notes.push(`exec and transfer rows skipped: they need root and the guest image (${manifest}).`);
    return;
  }
  // Sweeps at the edge's default interval (30 s), as the edge runs in production.
  const stack = await startBenchStack({ agent: { runtime: "namespace" }, reconcileIntervalSec: 30 });
  const { agent, edge, adminKey } = stack;
  try {
    const api = (method: string, path: string, init: { json?: unknown; body?: BodyInit } = {}) =>
      fetch(`${edge.url}${path}`, {
        method,
        headers: { "x-api-key": adminKey, ...(init.json !== undefined ? { "content-type": "application/json" } : {}) },
        ...(init.json !== undefined
          ? { body: JSON.stringify(init.json) }
          : init.body !== undefined
            ? { body: init.body }
            : {}),
      });
    const created = await api("POST", "/v1/sandboxes", { json: { template: TEMPLATE, timeoutSec: 1800 } });
    if (created.status !== 201) throw new Error(`create: ${created.status} ${await created.text()}`);
    const sb = (await created.json()) as { id: string; envdAccessToken: string };

    // (2) exec: the same program through REST and straight to envd's Process.Start.
    const viaRest = await timeRuns(40, 5, async () => {
      const res = await api("POST", `/v1/sandboxes/${sb.id}/exec`, { json: { cmd: "/bin/true", args: [] } });
      if (res.status !== 200) throw new Error(`exec: ${res.status}`);
      await res.arrayBuffer();
    });
    const envd = createClient(
      Process,
      createConnectTransport({ baseUrl: `http://${await slotAddress(agent, sb.id)}:49983`, httpVersion: "1.1" }),
    );
    const envdHeaders = { "x-access-token": sb.envdAccessToken, authorization: `Basic ${btoa("user:")}` };
    const direct = await timeRuns(40, 5, async () => {
      for await (const _event of envd.start({ process: { cmd: "/bin/true", args: [] } }, { headers: envdHeaders })) {
        // drain until the process ends
      }
    });
    const viaAgent = await timeRuns(40, 5, () =>
      agent.client.exec({ sandboxId: sb.id, cmd: "/bin/true", args: [], timeoutSec: 30 }),
    );
    const rest = summarize(viaRest);
    const raw = summarize(direct);
    const agentOnly = summarize(viaAgent);
    rows.push({
      name: "exec /bin/true, agent Exec RPC direct (attribution)",
      unit: "ms",
      value: agentOnly.median,
      p95: agentOnly.p95,
      n: agentOnly.n,
    });
    rows.push({
      name: "exec /bin/true, envd Process.Start direct",
      unit: "ms",
      value: raw.median,
      p95: raw.p95,
      n: raw.n,
    });
    rows.push({
      name: "exec /bin/true via REST (edge → agent → envd)",
      unit: "ms",
      value: rest.median,
      p95: rest.p95,
      n: rest.n,
      goal: "p50 ≤ direct + 10 ms",
    });
    rows.push({
      name: "exec overhead of REST (p50 difference)",
      unit: "ms",
      value: rest.median - raw.median,
      goal: "≤ 10 ms",
    });

    // (3) 256 MiB through REST, both ways, against a loopback TCP copy.
    const keyHeaders = { "x-api-key": adminKey };
    const up = await transfer({
      kind: "upload",
      url: `${edge.url}/v1/sandboxes/${sb.id}/files/write`,
      headers: keyHeaders,
      path: "/tmp/bench.bin",
      bytes: transferBytes,
    });
    const upRate = up.rate;
    const down = await transfer({
      kind: "download",
      url: `${edge.url}/v1/sandboxes/${sb.id}/files/read`,
      method: "POST",
      headers: { ...keyHeaders, "content-type": "application/json" },
      body: JSON.stringify({ path: "/tmp/bench.bin" }),
    });
    const downRate = down.rate;
    if (down.bytes !== transferBytes) throw new Error(`download returned ${down.bytes} bytes`);
    // Attribution: the same transfers straight to the agent's proxy, without the edge.
    const proxyUrl = `${agent.url}/proxy/${sb.id}/49983/files?path=${encodeURIComponent("/tmp/bench-direct.bin")}`;
    const proxyHeaders = { authorization: `Bearer ${agent.token}`, "x-access-token": sb.envdAccessToken };
    const directUpRate = (
      await transfer({ kind: "upload", url: proxyUrl, headers: proxyHeaders, bytes: transferBytes })
    ).rate;
    const directDown = await transfer({ kind: "download", url: proxyUrl, method: "GET", headers: proxyHeaders });
    const directDownRate = directDown.rate;
    if (directDown.bytes !== transferBytes) notes.push(`direct proxy download returned ${directDown.bytes} bytes`);
    const tcp = await loopbackCopy(transferBytes);
    rows.push({ name: "loopback TCP copy, 256 MiB", unit: "MiB/s", value: tcp });
    rows.push({
      name: "upload 256 MiB via REST (multipart, streamed)",
      unit: "MiB/s",
      value: upRate,
      ratio: { value: upRate / tcp, against: "vs TCP copy" },
      goal: "≥ 0.5×",
    });
    rows.push({
      name: "download 256 MiB via REST",
      unit: "MiB/s",
      value: downRate,
      ratio: { value: downRate / tcp, against: "vs TCP copy" },
      goal: "≥ 0.5×",
    });
    rows.push({
      name: "upload 256 MiB to the agent proxy directly (attribution)",
      unit: "MiB/s",
      value: directUpRate,
      ratio: { value: upRate / directUpRate, against: "REST vs direct" },
    });
    rows.push({
      name: "download 256 MiB from the agent proxy directly (attribution)",
      unit: "MiB/s",
      value: directDownRate,
      ratio: { value: downRate / directDownRate, against: "REST vs direct" },
    });
    // Per hop, with curl as the client.
    const dataDir = await mkdtemp(join(tmpdir(), "wrenn-bench-api-"));
    try {
      const dataFile = join(dataDir, "data.bin");
      await writeFile(dataFile, randomFillSync(Buffer.alloc(transferBytes)));
      const state = await readState(agent, sb.id);
      const netns = `${agent.netPrefix}-${state.slot?.index ?? 0}`;
      const envdAuth = ["-H", `x-access-token: ${sb.envdAccessToken}`];
      const raw = (base: string, extra: string[] = []): Pick<Hop, "upload" | "download"> => ({
        upload: [
          ...envdAuth,
          ...extra,
          "-H",
          "content-type: application/octet-stream",
          "-T",
          dataFile,
          "-X",
          "POST",
          `${base}/files?path=/tmp/bench-hop.bin`,
        ],
        download: [...envdAuth, ...extra, `${base}/files?path=/tmp/bench-hop.bin`],
      });
      await hopRows(
        rows,
        [
          {
            name: "envd inside the sandbox's netns (no veth)",
            prefix: ["ip", "netns", "exec", netns],
            ...raw(`http://${GUEST_IP}:49983`),
          },
          {
            name: "envd at the slot address (veth + nft)",
            prefix: [],
            ...raw(`http://${await slotAddress(agent, sb.id)}:49983`),
          },
          {
            name: "agent /proxy (+ agent relay)",
            prefix: [],
            ...raw(`${agent.url}/proxy/${sb.id}/49983`, ["-H", `authorization: Bearer ${agent.token}`]),
          },
          {
            name: "REST files/write, files/read (+ edge)",
            prefix: [],
            upload: [
              "-H",
              `x-api-key: ${adminKey}`,
              "-F",
              "path=/tmp/bench-hop-rest.bin",
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
              JSON.stringify({ path: "/tmp/bench-hop-rest.bin" }),
              `${edge.url}/v1/sandboxes/${sb.id}/files/read`,
            ],
          },
        ],
        tcp,
      );
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
    notes.push(
      "exec and transfers run against a real agent (namespace runtime) and envd in the guest image; the edge uses PGlite.",
      `curl rows: median of ${curlRuns} runs each; all processes (curl, edge, agent, envd) share this machine's ${cpus().length} CPUs, so every hop's CPU cost lowers every rate.`,
    );
    await api("DELETE", `/v1/sandboxes/${sb.id}`);
  } finally {
    await stack.close();
  }
}

export const benchmark: Benchmark = {
  name: "api",
  description: "edge overhead: route throughput, exec round trip, upload/download rate",
  async run(): Promise<BenchReport> {
    const rows: BenchRow[] = [];
    const notes: string[] = [];
    const [load1] = loadavg();
    notes.push(
      `load average at start: ${load1?.toFixed(1)} on ${cpus().length} CPUs (other work on the machine skews every row).`,
    );
    await routeThroughput(rows, "pglite");
    if (process.getuid?.() === 0) await routeThroughput(rows, "postgres");
    else notes.push("the PostgreSQL row needs root (the server runs as the postgres user).");
    notes.push(`req/s: ${concurrency} concurrent keep-alive clients on a worker thread for ${loadSeconds} s each.`);
    await realAgentNumbers(rows, notes);
    return { title: "Edge API overhead (bench/api.ts)", rows, notes };
  },
};
