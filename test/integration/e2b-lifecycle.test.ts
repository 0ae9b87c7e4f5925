import { randomBytes } from "node:crypto";
import { request as httpRequest } from "node:http";
import { Sandbox, SandboxNotFoundError } from "e2b";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NodeEdge } from "../../edge/node.js";
import { SandboxState, StopReason } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { Sandbox as WrennSandbox } from "../../sdk/index.js";
import { IMAGES_ROOT, requireImage, requireRoot } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { newTeamKey, pointE2bSdkAt, sdkTestLogger, startEdgeForAgent } from "../helpers/edge-stack.js";

/**
 * Acceptance for issue 17's lifecycle part, with the official `e2b` SDK (2.51.0) against the real
 * stack (Node edge with PGlite, a real agent, the real guest image): a 3 s timeout pauses (or kills)
 * the sandbox within a second of its end time and getInfo, list and isRunning say so at once; traffic
 * through the proxy wakes an auto-resume sandbox by header routing and by host routing, and does not
 * wake one without; a pause without memory keeps files and ends processes.
 *
 * The edge's reconcile sweep is off and the agent's reaper pass is a minute apart, so what is
 * measured here is the agent's per-sandbox timer and the edge's read repair alone.
 */

const adminKey = `wrn_lifecycle_admin_${randomBytes(16).toString("hex")}`;
const PORT = 8000;

let agent: AgentProcess | undefined;
let edge: NodeEdge | undefined;
let apiKey = "";
let restoreEnv: (() => void) | undefined;

function edgeUrl(): string {
  if (!edge) throw new Error("edge not started");
  return edge.url;
}

/** A raw HTTP request to the edge with any Host header (fetch may not override Host). */
function rawRequest(path: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  const url = new URL(edgeUrl());
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path, method: "GET", headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

/** A request to a sandbox port through the edge's proxy, routed by E2B's headers. */
const byHeaders = (sandboxId: string, path: string) =>
  rawRequest(path, { "E2b-Sandbox-Id": sandboxId, "E2b-Sandbox-Port": String(PORT) });

/** E2B's `GET /sandboxes/{id}` as JSON (the SDK's getInfo drops fields it does not know, like keepMemory). */
async function detail(sandboxId: string): Promise<{ state: string; lifecycle: Record<string, unknown> }> {
  const res = await fetch(`${edgeUrl()}/sandboxes/${sandboxId}`, { headers: { "X-API-Key": apiKey } });
  expect(res.status).toBe(200);
  return (await res.json()) as { state: string; lifecycle: Record<string, unknown> };
}

/** Polls getInfo every 50 ms until `done` holds; returns when (epoch ms) it first did. */
async function firstSeen(what: string, probe: () => Promise<boolean>, timeoutMs = 15_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe()) return Date.now();
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const stateOf = async (sandboxId: string) => (await Sandbox.getInfo(sandboxId)).state;

/** Serves /home/user/www on PORT inside the sandbox and waits until the proxy reaches it. */
async function serve(sbx: Sandbox, text: string): Promise<void> {
  await sbx.files.write("/home/user/www/index.html", text);
  await sbx.commands.run(`python3 -m http.server ${PORT} --bind 127.0.0.1 --directory /home/user/www`, {
    background: true,
  });
  await firstSeen("the server in the sandbox", async () => (await byHeaders(sbx.sandboxId, "/")).status === 200);
}

beforeAll(async () => {
  requireRoot();
  await requireImage();
  agent = await startAgentProcess({ rootDir: IMAGES_ROOT, env: { AGENT_REAP_INTERVAL_MS: "60000" } });
  edge = await startEdgeForAgent(agent, {
    adminKey,
    env: { WRENN_RECONCILE_INTERVAL_SEC: "0" },
    logger: sdkTestLogger(),
  });
  apiKey = await newTeamKey(edge, adminKey, "lifecycle", `lifecycle-${randomBytes(3).toString("hex")}`);
  restoreEnv = pointE2bSdkAt(edge, apiKey);
}, 180_000);

afterAll(async () => {
  restoreEnv?.();
  await edge?.close().catch(() => {});
  await agent?.stop().catch(() => {});
}, 120_000);

describe("onTimeout: pause with a 3 s timeout", () => {
  it("is paused within a second of its end time, in getInfo, list and isRunning; traffic wakes it by headers and by host", async () => {
    const created = Date.now();
    const sbx = await Sandbox.create({ timeoutMs: 3_000, lifecycle: { onTimeout: "pause", autoResume: true } });
    // The timeout counts from when the sandbox is ready (create's answer), not from the request.
    const ready = Date.now();
    try {
      const info = await sbx.getInfo();
      expect(info.state).toBe("running");
      expect(info.lifecycle).toEqual({ onTimeout: "pause", autoResume: true });
      expect((await detail(sbx.sandboxId)).lifecycle).toEqual({
        onTimeout: "pause",
        autoResume: true,
        keepMemory: true,
      });
      const endAt = info.endAt.getTime();
      // Only API reads until it pauses: traffic through the proxy would wake it.
      const pausedAt = await firstSeen(
        "getInfo to say paused",
        async () => (await stateOf(sbx.sandboxId)) === "paused",
      );
      console.log(
        `lifecycle: paused seen ${pausedAt - endAt} ms after the end time, ${pausedAt - ready} ms after create answered (${ready - created} ms to create)`,
      );
      expect(pausedAt - endAt).toBeLessThanOrEqual(1_000);
      expect(pausedAt - ready).toBeLessThanOrEqual(4_200);
      // The host did it (no sweep runs in this stack).
      expect((await agent?.client.getSandbox({ sandboxId: sbx.sandboxId }))?.sandbox?.state).toBe(SandboxState.PAUSED);
      const listed = await Sandbox.list({ query: { state: ["paused"] } }).nextItems();
      expect(listed.map((s) => s.sandboxId)).toContain(sbx.sandboxId);
      // At 5 s after create, as a client checks: paused.
      await new Promise((r) => setTimeout(r, Math.max(0, ready + 5_000 - Date.now())));
      expect(await stateOf(sbx.sandboxId)).toBe("paused");

      // An HTTP request to a server in the sandbox (envd's port) through the proxy wakes it.
      const health = await rawRequest("/health", { "E2b-Sandbox-Id": sbx.sandboxId, "E2b-Sandbox-Port": "49983" });
      expect(health.status).toBeLessThan(300);
      expect(await stateOf(sbx.sandboxId)).toBe("running");

      // A server of the user's: started, then the next timeout pauses the sandbox with it frozen.
      await serve(sbx, "woken");
      await sbx.setTimeout(3_000);
      const endAgain = (await sbx.getInfo()).endAt.getTime();
      const pausedAgain = await firstSeen("the second pause", async () => (await stateOf(sbx.sandboxId)) === "paused");
      expect(pausedAgain - endAgain).toBeLessThanOrEqual(1_000);
      // Header routing wakes it, and the server answers as if nothing happened.
      expect(await byHeaders(sbx.sandboxId, "/")).toEqual({ status: 200, body: "woken" });
      expect(await stateOf(sbx.sandboxId)).toBe("running");

      // Resumed after an auto-pause: the whole timeout again (paused time did not count), then paused again.
      const resumedEnd = (await sbx.getInfo()).endAt.getTime();
      expect(resumedEnd - Date.now()).toBeGreaterThan(1_500);
      const pausedThird = await firstSeen("the third pause", async () => (await stateOf(sbx.sandboxId)) === "paused");
      expect(pausedThird - resumedEnd).toBeLessThanOrEqual(1_000);

      // Host routing (`<port>-<id>.<domain>`, what getHost gives) wakes it too.
      const host = sbx.getHost(PORT);
      expect(host).toMatch(new RegExp(`^${PORT}-${sbx.sandboxId}\\.`));
      expect(await rawRequest("/", { host })).toEqual({ status: 200, body: "woken" });
      expect(await stateOf(sbx.sandboxId)).toBe("running");
      expect(await sbx.isRunning()).toBe(true);
    } finally {
      await Sandbox.kill(sbx.sandboxId).catch(() => {});
    }
  }, 120_000);

  it("without autoResume, traffic does not wake it (a clear 502) and connect() resumes it", async () => {
    const sbx = await Sandbox.create({ timeoutMs: 60_000, lifecycle: { onTimeout: "pause", autoResume: false } });
    try {
      await serve(sbx, "connected");
      await sbx.setTimeout(3_000);
      const endAt = (await sbx.getInfo()).endAt.getTime();
      const pausedAt = await firstSeen(
        "getInfo to say paused",
        async () => (await stateOf(sbx.sandboxId)) === "paused",
      );
      expect(pausedAt - endAt).toBeLessThanOrEqual(1_000);
      expect(await sbx.isRunning()).toBe(false);

      const refused = await byHeaders(sbx.sandboxId, "/");
      expect(refused.status).toBe(502);
      expect(JSON.parse(refused.body)).toMatchObject({
        sandboxId: sbx.sandboxId,
        message: "The sandbox was not found",
        error: { code: "SANDBOX_NOT_FOUND" },
      });
      expect((await rawRequest("/", { host: sbx.getHost(PORT) })).status).toBe(502);
      expect(await stateOf(sbx.sandboxId)).toBe("paused");

      const connected = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 60_000 });
      expect(await connected.isRunning()).toBe(true);
      expect(await byHeaders(sbx.sandboxId, "/")).toEqual({ status: 200, body: "connected" });
    } finally {
      await Sandbox.kill(sbx.sandboxId).catch(() => {});
    }
  }, 120_000);
});

describe("pause without memory", () => {
  it("onTimeout { action: 'pause', keepMemory: false }: files stay, processes end, connect boots it afresh", async () => {
    const sbx = await Sandbox.create({
      timeoutMs: 60_000,
      lifecycle: { onTimeout: { action: "pause", keepMemory: false } },
    });
    try {
      expect((await detail(sbx.sandboxId)).lifecycle).toEqual({
        onTimeout: "pause",
        autoResume: false,
        keepMemory: false,
      });
      await sbx.files.write("/home/user/kept.txt", "written before the pause");
      await sbx.commands.run("sleep 900", { background: true });
      // (The shell the SDK starts execs sleep a moment after the start is reported.)
      await firstSeen(
        "the sleeper to run",
        async () => (await sbx.commands.run("pgrep -x sleep || true")).stdout.trim() !== "",
      );
      await sbx.setTimeout(3_000);
      const endAt = (await sbx.getInfo()).endAt.getTime();
      const pausedAt = await firstSeen(
        "getInfo to say paused",
        async () => (await stateOf(sbx.sandboxId)) === "paused",
      );
      expect(pausedAt - endAt).toBeLessThanOrEqual(1_000);
      expect((await agent?.client.getSandbox({ sandboxId: sbx.sandboxId }))?.sandbox?.pausedWithoutMemory).toBe(true);

      const resumed = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 60_000 });
      expect(await resumed.files.read("/home/user/kept.txt")).toBe("written before the pause");
      const sleepers = await resumed.commands.run("pgrep -x sleep || true");
      expect(sleepers.stdout.trim()).toBe("");
      expect((await resumed.getInfo()).state).toBe("running");
    } finally {
      await Sandbox.kill(sbx.sandboxId).catch(() => {});
    }
  }, 120_000);

  it("sandbox.pause({ keepMemory: false }) does the same on request", async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000 });
    try {
      await sbx.files.write("/home/user/kept.txt", "kept");
      await sbx.commands.run("sleep 900", { background: true });
      await firstSeen(
        "the sleeper to run",
        async () => (await sbx.commands.run("pgrep -x sleep || true")).stdout.trim() !== "",
      );
      expect(await sbx.pause({ keepMemory: false })).toBe(true);
      expect(await stateOf(sbx.sandboxId)).toBe("paused");
      const resumed = await Sandbox.connect(sbx.sandboxId);
      expect(await resumed.files.read("/home/user/kept.txt")).toBe("kept");
      expect((await resumed.commands.run("pgrep -x sleep || true")).stdout.trim()).toBe("");
    } finally {
      await Sandbox.kill(sbx.sandboxId).catch(() => {});
    }
  }, 120_000);

  it("refuses keepMemory: false with autoResume (400), as E2B does", async () => {
    await expect(
      Sandbox.create({
        timeoutMs: 3_000,
        lifecycle: { onTimeout: { action: "pause", keepMemory: false }, autoResume: true },
      }),
    ).rejects.toThrow(/autoResume/);
  });
});

describe("onTimeout: kill", () => {
  it("is gone within a second of its end time", async () => {
    const sbx = await Sandbox.create({ timeoutMs: 3_000 });
    try {
      const endAt = (await sbx.getInfo()).endAt.getTime();
      const goneAt = await firstSeen("getInfo to say not found", async () => {
        try {
          await Sandbox.getInfo(sbx.sandboxId);
          return false;
        } catch (err) {
          if (err instanceof SandboxNotFoundError) return true;
          throw err;
        }
      });
      expect(goneAt - endAt).toBeLessThanOrEqual(1_000);
      expect(await sbx.isRunning()).toBe(false);
      const all = await Sandbox.list().nextItems();
      expect(all.map((s) => s.sandboxId)).not.toContain(sbx.sandboxId);
      // The host killed it (its teardown may still be finishing when the edge already says gone).
      await firstSeen(
        "the host to finish the kill",
        async () =>
          (await agent?.client.getSandbox({ sandboxId: sbx.sandboxId }))?.sandbox?.state === SandboxState.STOPPED,
      );
      expect((await agent?.client.getSandbox({ sandboxId: sbx.sandboxId }))?.sandbox?.stopReason).toBe(
        StopReason.TIMEOUT,
      );
    } finally {
      await Sandbox.kill(sbx.sandboxId).catch(() => {});
    }
  }, 60_000);
});

describe("Wrenn's own API and SDK (/v1) get the same policy", () => {
  it("creates with onTimeout pause and keepMemory false, reports them, pauses at the timeout without memory", async () => {
    const conn = { apiUrl: edgeUrl(), apiKey };
    const sbx = await WrennSandbox.create({ ...conn, timeoutSec: 60, onTimeout: "pause", keepMemory: false });
    try {
      expect(await sbx.getInfo()).toMatchObject({
        onTimeout: "pause",
        keepMemory: false,
        autoResume: false,
        pausedWithoutMemory: false,
      });
      await sbx.files.write("/home/user/v1.txt", "v1");
      const set = await sbx.setTimeout(2);
      const endAt = Date.parse(set.endAt ?? "");
      const pausedAt = await firstSeen(
        "the /v1 info to say paused",
        async () => (await sbx.getInfo()).state === "paused",
      );
      expect(pausedAt - endAt).toBeLessThanOrEqual(1_000);
      expect(await sbx.getInfo()).toMatchObject({ state: "paused", pausedWithoutMemory: true, endAt: null });
      expect(await sbx.resume()).toMatchObject({ state: "running", pausedWithoutMemory: false });
      expect(await sbx.files.read("/home/user/v1.txt")).toBe("v1");
      // And on request, through the SDK's pause.
      expect(await sbx.pause({ keepMemory: false })).toMatchObject({ state: "paused", pausedWithoutMemory: true });
    } finally {
      await sbx.kill().catch(() => {});
    }
  }, 120_000);
});
