import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentMessageLimits } from "../../edge/clients/agent.js";
import { createEdgeHarness, type EdgeHarness, FakeAgent } from "../helpers/edge-app.js";

/**
 * The edge reads a host agent's Connect answers with a size limit. A real HTTP server on loopback
 * plays the agent: every method is the in-memory fake (a double at the protocol boundary) except
 * Exec and ExecStream, which answer 1 GiB — declared in Content-Length, chunked without a length, or
 * as a stream message whose envelope claims 2 GiB. The edge (real app, real Connect-over-fetch
 * connector) must answer 502 AGENT_ERROR in the error shape, stop reading early, keep its memory, and
 * keep serving.
 */

const GiB = 2 ** 30;
type Mode = "content-length" | "chunked";
let unaryMode: Mode = "content-length";
/** Bytes the fake agent wrote of its current oversized answer, and whether the edge hung up. */
const sent = { bytes: 0, closed: false };

/** Writes up to 1 GiB of `A`s, 1 MiB at a time, only as fast as the reader takes them. */
function pumpGiB(res: ServerResponse, prefix?: Buffer): void {
  sent.bytes = 0;
  sent.closed = false;
  res.on("close", () => {
    sent.closed = true;
  });
  if (prefix) res.write(prefix);
  const chunk = Buffer.alloc(2 ** 20, 0x41);
  const pump = (): void => {
    while (sent.bytes < GiB && !res.destroyed) {
      sent.bytes += chunk.length;
      if (!res.write(chunk)) {
        res.once("drain", pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

function oversizeUnary(req: IncomingMessage, res: ServerResponse): void {
  req.resume();
  const headers: Record<string, string> = { "content-type": "application/proto" };
  if (unaryMode === "content-length") headers["content-length"] = String(GiB);
  res.writeHead(200, headers);
  pumpGiB(res);
}

function oversizeStream(req: IncomingMessage, res: ServerResponse): void {
  req.resume();
  res.writeHead(200, { "content-type": "application/connect+proto" });
  // One envelope: flags 0, then a big-endian length of 2 GiB - 1, then the bytes.
  const envelope = Buffer.alloc(5);
  envelope.writeUInt32BE(0x7fff_ffff, 1);
  pumpGiB(res, envelope);
}

const token = `agent-token-${randomBytes(12).toString("hex")}`;
let server: Server;
let h: EdgeHarness;
let sandboxId = "";
let teamKey = "";

beforeAll(async () => {
  const fake = new FakeAgent("http://127.0.0.1", token);
  const connect = connectNodeAdapter({ routes: fake.routes });
  server = createServer((req, res) => {
    if (req.url?.endsWith("/hostagent.v1.HostAgentService/Exec")) return oversizeUnary(req, res);
    if (req.url?.endsWith("/hostagent.v1.HostAgentService/ExecStream")) return oversizeStream(req, res);
    connect(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const address = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  h = await createEdgeHarness({ realAgents: true });
  const registered = await h.request("POST", "/v1/hosts", { key: h.adminKey, json: { address, token } });
  expect(registered.status).toBe(201);
  const team = await h.newTeam();
  teamKey = team.key;
  const created = await h.request("POST", "/v1/sandboxes", { key: teamKey, json: {} });
  expect(created.status).toBe(201);
  sandboxId = ((await created.json()) as { id: string }).id;
}, 60_000);

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  await h?.close();
});

interface ErrorJson {
  error: { code: string; message: string; requestId: string };
}

/** Runs `work` while sampling this process's RSS; returns the result and the peak growth in MiB. */
async function withPeakRss<T>(work: () => Promise<T>): Promise<{ result: T; peakGrowthMiB: number }> {
  const base = process.memoryUsage().rss;
  let peak = base;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 2);
  try {
    const result = await work();
    peak = Math.max(peak, process.memoryUsage().rss);
    return { result, peakGrowthMiB: (peak - base) / 2 ** 20 };
  } finally {
    clearInterval(timer);
  }
}

describe("an agent answering 1 GiB", () => {
  it.each<Mode>(["content-length", "chunked"])("unary Exec (%s): 502 AGENT_ERROR, read stops early", async (mode) => {
    unaryMode = mode;
    const { result: res, peakGrowthMiB } = await withPeakRss(() =>
      h.request("POST", `/v1/sandboxes/${sandboxId}/exec`, { key: teamKey, json: { cmd: "true" } }),
    );
    const body = (await res.json()) as ErrorJson;
    expect({ status: res.status, code: body.error.code }).toEqual({ status: 502, code: "AGENT_ERROR" });
    expect(body.error.message).toMatch(/larger than the edge accepts \(40 MiB per message\)/);
    expect(body.error.requestId).toBe(res.headers.get("x-request-id"));
    // The edge hung up: the agent could not push more than the limit plus what socket buffers hold.
    await expect.poll(() => sent.closed, { timeout: 10_000 }).toBe(true);
    expect(sent.bytes).toBeLessThan(agentMessageLimits.readMaxBytes + 32 * 2 ** 20);
    if (mode === "content-length") expect(sent.bytes).toBeLessThan(16 * 2 ** 20);
    console.info(
      `exec answer of 1 GiB (${mode}): agent wrote ${sent.bytes >> 20} MiB, RSS +${peakGrowthMiB.toFixed(0)} MiB`,
    );
    // The bar: a 1 GiB answer costs the edge under 64 MiB of RSS.
    expect(peakGrowthMiB).toBeLessThan(64);
  });

  it("ExecStream message claiming 2 GiB: an error event with AGENT_ERROR, read stops at the envelope", async () => {
    const { result: text, peakGrowthMiB } = await withPeakRss(async () => {
      const res = await h.request("POST", `/v1/sandboxes/${sandboxId}/exec/stream`, {
        key: teamKey,
        json: { cmd: "true" },
      });
      expect(res.status).toBe(200);
      return res.text();
    });
    expect(text).toMatch(/event: error\ndata: \{"code":"AGENT_ERROR","message":"[^"]*larger than the edge accepts/);
    await expect.poll(() => sent.closed, { timeout: 10_000 }).toBe(true);
    expect(sent.bytes).toBeLessThan(16 * 2 ** 20);
    expect(peakGrowthMiB).toBeLessThan(64);
  });

  it("the edge keeps serving: the same sandbox answers other calls", async () => {
    const res = await h.request("GET", `/v1/sandboxes/${sandboxId}`, { key: teamKey });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { id: string }).id).toBe(sandboxId);
  });
});
