import { access } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { serve } from "@hono/node-server";
import { parseEnv } from "../edge/env.js";
import { noopLogger } from "../edge/logger.js";
import { startNodeEdge } from "../edge/node.js";
import { Process } from "../proto/gen/envd/process/process_pb.js";
import { startAgentProcess } from "../test/helpers/agent-process.js";
import { addFakeHost, createEdgeHarness } from "../test/helpers/edge-app.js";
import { IMAGES_ROOT, slotAddress, TEMPLATE } from "../test/integration/agent-fixtures.js";
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

async function routeThroughput(rows: BenchRow[], notes: string[]): Promise<void> {
  const harness = await createEdgeHarness({
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
    rows.push({ name: "bare Hono route (same server)", unit: "req/s", value: bare });
    rows.push({
      name: "GET /v1/sandboxes/{id} (auth + PGlite read)",
      unit: "req/s",
      value: get,
      ratio: { value: get / bare, against: "vs bare route" },
      goal: "≥ 0.5×",
    });
    notes.push(
      `req/s: ${concurrency} concurrent keep-alive clients on a worker thread for ${loadSeconds} s each; PGlite in memory.`,
    );
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await harness.close();
  }
}

/** MiB/s of pushing `bytes` through a loopback TCP connection into a discarding reader. */
async function loopbackCopy(bytes: number): Promise<number> {
  const chunk = Buffer.alloc(MiB, 7);
  const server: Server = createServer((socket) => {
    socket.on("data", () => {});
    socket.on("end", () => socket.end());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  const { connect } = await import("node:net");
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    socket.on("error", reject);
    socket.on("close", () => resolve());
    let sent = 0;
    const pump = () => {
      while (sent < bytes) {
        sent += chunk.length;
        if (!socket.write(chunk)) {
          socket.once("drain", pump);
          return;
        }
      }
      socket.end();
    };
    socket.on("connect", pump);
    socket.resume();
  });
  const seconds = (performance.now() - t0) / 1000;
  server.close();
  return bytes / MiB / seconds;
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
  const adminKey = `wrn_bench_admin_${Date.now()}_0000000000`;
  const agent = await startAgentProcess({ runtime: "namespace", rootDir: IMAGES_ROOT });
  const parsed = parseEnv({
    WRENN_PORT: "0",
    WRENN_HOST: "127.0.0.1",
    WRENN_DATA_DIR: "memory://",
    WRENN_ENCRYPTION_KEY: "b".repeat(64),
    WRENN_ADMIN_API_KEY: adminKey,
  });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  const edge = await startNodeEdge(parsed.env, noopLogger);
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
    const reg = await api("POST", "/v1/hosts", { json: { address: agent.url, token: agent.token } });
    if (reg.status !== 201) throw new Error(`register: ${reg.status} ${await reg.text()}`);
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
    const rest = summarize(viaRest);
    const raw = summarize(direct);
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
    const payload = new Uint8Array(transferBytes);
    for (let i = 0; i < payload.length; i += 4096) payload[i] = i & 0xff;
    const form = new FormData();
    form.set("path", "/tmp/bench.bin");
    form.set("file", new Blob([payload]), "bench.bin");
    let t0 = performance.now();
    const up = await api("POST", `/v1/sandboxes/${sb.id}/files/write`, { body: form });
    if (up.status !== 200) throw new Error(`upload: ${up.status} ${await up.text()}`);
    await up.arrayBuffer();
    const upRate = transferBytes / MiB / ((performance.now() - t0) / 1000);
    t0 = performance.now();
    const down = await api("POST", `/v1/sandboxes/${sb.id}/files/read`, { json: { path: "/tmp/bench.bin" } });
    let received = 0;
    for await (const chunk of down.body ?? new ReadableStream<Uint8Array>()) received += chunk.length;
    const downRate = transferBytes / MiB / ((performance.now() - t0) / 1000);
    if (received !== transferBytes) throw new Error(`download returned ${received} bytes`);
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
    notes.push(
      "exec and transfers run against a real agent (namespace runtime) and envd in the guest image; the edge uses PGlite.",
    );
    await api("DELETE", `/v1/sandboxes/${sb.id}`);
  } finally {
    await edge.close();
    await agent.stop();
  }
}

export const benchmark: Benchmark = {
  name: "api",
  description: "edge overhead: route throughput, exec round trip, upload/download rate",
  async run(): Promise<BenchReport> {
    const rows: BenchRow[] = [];
    const notes: string[] = [];
    await routeThroughput(rows, notes);
    await realAgentNumbers(rows, notes);
    return { title: "Edge API overhead (bench/api.ts)", rows, notes };
  },
};
