import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { noopLogger } from "../logger.js";
import { TelemetrySampler } from "./sampler.js";
import { TelemetryStore } from "./store.js";

/**
 * The sampler reads envd inside guests, and root in a guest can replace envd and answer anything: an
 * endless body, a lying Content-Length, silence, a flood of journal entries with huge fields. A real
 * HTTP server on loopback plays each kind of hostile envd (chosen by the access token the sampler
 * sends); one pass must end within the read timeout, read at most its bound, and record nothing
 * beyond the rings' limits, while an honest sandbox in the same pass is sampled as usual.
 */

const MIB = 1024 * 1024;
/** What the hostile envd pushed into the socket before the sampler stopped reading. */
const sent = { endless: 0 };

function endless(res: ServerResponse): void {
  res.writeHead(200, { "content-type": "application/json" });
  const chunk = Buffer.alloc(64 * 1024, 0x20);
  const pump = () => {
    while (!res.destroyed && sent.endless < 1024 * MIB) {
      sent.endless += chunk.length;
      if (!res.write(chunk)) {
        res.once("drain", pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

let server: Server;
let port = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    res.on("error", () => {});
    const token = String(req.headers["x-access-token"] ?? "");
    const url = new URL(req.url ?? "/", "http://envd");
    if (token === "honest") {
      res.setHeader("content-type", "application/json");
      if (url.pathname === "/metrics") {
        res.end(JSON.stringify({ cpu_count: 2, cpu_used_pct: 12.5, mem_used: 100, mem_total: 200 }));
      } else res.end(JSON.stringify({ epoch: "e1", events: [], next: 0 }));
      return;
    }
    if (token === "endless") return endless(res);
    if (token === "lying-length") {
      res.writeHead(200, { "content-length": String(50 * MIB), "content-type": "application/json" });
      res.write("{");
      return;
    }
    if (token === "silent") return; // never answers
    if (token === "flood") {
      res.setHeader("content-type", "application/json");
      if (url.pathname === "/metrics") return res.end("[]");
      // Every page is full (20 events with 25 KiB of fields, under the 1 MiB bound) and the cursor keeps moving.
      const after = Number(url.searchParams.get("after") ?? 0);
      const events = Array.from({ length: 500 }, (_, i) => ({
        seq: after + i + 1,
        ts: Date.now(),
        kind: "start",
        pid: i,
        cmd: "x".repeat(10_000),
        args: "y".repeat(10_000),
        user: "u".repeat(5_000),
      }));
      res.end(JSON.stringify({ epoch: "e1", events: events.slice(0, 20), next: after + 20 }));
      return;
    }
    res.statusCode = 404;
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe("the telemetry sampler against a hostile envd", () => {
  it("ends a pass within its read timeout, stops at its byte bound, and still samples the honest sandbox", async () => {
    const store = new TelemetryStore({ samplesPerSandbox: 100, logsPerSandbox: 40, keepAfterEndMs: 60_000 });
    const sandboxes = ["honest", "endless", "lying-length", "silent", "flood"].map((token) => ({
      id: token,
      address: "127.0.0.1",
      accessToken: token,
    }));
    const sampler = new TelemetrySampler({
      store,
      logger: noopLogger,
      intervalMs: 500,
      running: () => sandboxes,
      isLive: () => true,
      envdPort: port,
    });
    const started = Date.now();
    await sampler.sampleAll();
    // The read timeout is 500 ms here (the interval); the silent and lying envds cost at most that.
    expect(Date.now() - started).toBeLessThan(5_000);
    // The endless body was cut near the 1 MiB bound (plus what sat in socket buffers), not read to 1 GiB.
    expect(sent.endless).toBeLessThan(64 * MIB);

    const pulled = store.pull({ epoch: store.epoch, afterSeq: 0, limit: 10_000 });
    const samplesOf = (id: string) => pulled.samples.filter((s) => s.sandboxId === id);
    expect(samplesOf("honest")).toHaveLength(1);
    expect(samplesOf("honest")[0]).toMatchObject({ cpuCount: 2, cpuUsedPct: 12.5, memUsed: 100, memTotal: 200 });
    for (const id of ["endless", "lying-length", "silent", "flood"]) expect(samplesOf(id)).toHaveLength(0);

    // The flood: a few pages per pass, each entry's fields cut, and the ring's bound holds.
    const flood = pulled.logs.filter((l) => l.sandboxId === "flood");
    expect(flood.length).toBeGreaterThan(0);
    expect(flood.length).toBeLessThanOrEqual(40);
    for (const entry of flood) {
      expect(entry.message.length).toBeLessThan(2_000);
      for (const value of Object.values(entry.fields)) expect(value.length).toBeLessThanOrEqual(601);
    }
  }, 20_000);
});
