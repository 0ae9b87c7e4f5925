import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NodeEdge } from "../../edge/node.js";
import { readServerSentEvents } from "../../sdk/sse.js";
import { verifyWebhookSignature } from "../../sdk/webhooks.js";
import { IMAGES_ROOT, requireImage, requireRoot, TEMPLATE } from "../helpers/agent-fixtures.js";
import { type AgentProcess, freePort, startAgentProcess } from "../helpers/agent-process.js";
import { repoRoot, waitForDatabase, watchChild } from "../helpers/cli-stack.js";
import { newTeamKey, startEdgeForAgent } from "../helpers/edge-stack.js";
import { type ReceivedHook, startWebhookReceiver, type WebhookReceiver } from "../helpers/webhook-receiver.js";

/**
 * Acceptance of issue 22's events and webhooks: a real edge driving a real agent (namespace runtime),
 * a receiver on loopback. Back-off and the delivery interval are shortened so retries take seconds.
 */

const adminKey = `wrn_it_admin_${randomBytes(16).toString("hex")}`;
const encryptionKey = randomBytes(32).toString("hex");
/** Settings every edge of this file runs with: loopback receivers allowed, fast retries, no sweep. */
const webhookEnv = {
  WRENN_WEBHOOKS_ALLOW_PRIVATE: "true",
  WRENN_WEBHOOK_RETRY_BASE_MS: "200",
  WRENN_WEBHOOK_INTERVAL_MS: "100",
  // The second (child-process) edge shares the agent; neither sweeps the other's sandboxes away.
  WRENN_RECONCILE_INTERVAL_SEC: "0",
};

let agent: AgentProcess | undefined;
let edge: NodeEdge | undefined;
let receiver: WebhookReceiver | undefined;
let key = "";

async function call(base: string, apiKey: string, method: string, path: string, json?: unknown): Promise<Response> {
  return fetch(`${base}${path}`, {
    method,
    headers: { "x-api-key": apiKey, ...(json !== undefined ? { "content-type": "application/json" } : {}) },
    ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
  });
}

async function createWebhook(base: string, apiKey: string, path: string, eventTypes: string[]) {
  const res = await call(base, apiKey, "POST", "/v1/webhooks", { url: `${receiver?.url}${path}`, eventTypes });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string; secret: string };
}

async function createAndKill(base: string, apiKey: string): Promise<string> {
  const made = await call(base, apiKey, "POST", "/v1/sandboxes", { template: TEMPLATE, timeoutSec: 300 });
  expect(made.status).toBe(201);
  const { id } = (await made.json()) as { id: string };
  expect((await call(base, apiKey, "DELETE", `/v1/sandboxes/${id}`)).status).toBe(204);
  return id;
}

const hookFor = (path: string, type: string, sandboxId: string) => (h: ReceivedHook) =>
  h.path === path && h.status === 200 && h.body.includes(`"type":"${type}"`) && h.body.includes(sandboxId);

beforeAll(async () => {
  requireRoot();
  await requireImage();
  receiver = await startWebhookReceiver();
  agent = await startAgentProcess({ runtime: "namespace", rootDir: IMAGES_ROOT });
  edge = await startEdgeForAgent(agent, { adminKey, encryptionKey, env: webhookEnv });
  key = await newTeamKey(edge, adminKey, "webhooks", `webhooks-${randomBytes(3).toString("hex")}`);
});

afterAll(async () => {
  await edge?.close().catch(() => {});
  await agent?.stop().catch(() => {});
  await receiver?.close();
});

describe("events and webhooks against a real agent", () => {
  it("signs every delivery so the SDK verifies it, streams sandbox.killed live, and keeps events after the sandbox ends", async () => {
    if (!edge || !receiver) throw new Error("not started");
    const hook = await createWebhook(edge.url, key, "/all", ["sandbox.*"]);
    const abort = new AbortController();
    const stream = await fetch(`${edge.url}/v1/events/stream?type=sandbox.killed`, {
      headers: { "x-api-key": key },
      signal: abort.signal,
    });
    expect(stream.status).toBe(200);
    const live = readServerSentEvents(stream.body as ReadableStream<Uint8Array>);
    const id = await createAndKill(edge.url, key);

    const killedLive = await live.next();
    expect(killedLive.value?.event).toBe("sandbox.killed");
    expect(JSON.parse(killedLive.value?.data ?? "{}")).toMatchObject({ type: "sandbox.killed", sandboxId: id });
    abort.abort();

    for (const type of ["sandbox.created", "sandbox.running", "sandbox.killed"]) {
      const got = await receiver.waitFor(hookFor("/all", type, id));
      expect(await verifyWebhookSignature(hook.secret, got.headers, got.body)).toBe(true);
      expect(await verifyWebhookSignature(`${hook.secret}x`, got.headers, got.body)).toBe(false);
      expect(got.headers["wrenn-webhook-event"]).toBe(type);
      expect(got.headers["wrenn-webhook-id"]).toMatch(/^whd_/);
    }

    // The sandbox is gone from its host; its events stay.
    expect((await agent?.client.listSandboxes({}))?.sandboxes.some((s) => s.sandboxId === id)).toBe(false);
    const listed = await call(edge.url, key, "GET", `/v1/events?sandboxId=${id}&order=asc`);
    const body = (await listed.json()) as { events: Array<{ type: string }> };
    expect(body.events.map((e) => e.type)).toEqual(["sandbox.created", "sandbox.running", "sandbox.killed"]);
  });

  it("retries a receiver that fails 3 times with back-off, delivers exactly once more, and logs 4 attempts", async () => {
    if (!edge || !receiver) throw new Error("not started");
    const failures = new Map<string, number>();
    receiver.respond = (h) => {
      if (h.path !== "/flaky") return 200;
      const delivery = String(h.headers["wrenn-webhook-id"]);
      const seen = failures.get(delivery) ?? 0;
      failures.set(delivery, seen + 1);
      return seen < 3 ? 500 : 200;
    };
    const hook = await createWebhook(edge.url, key, "/flaky", ["sandbox.killed"]);
    const id = await createAndKill(edge.url, key);
    const ok = await receiver.waitFor(hookFor("/flaky", "sandbox.killed", id), 20_000);
    // Long enough for several more runs of the loop (every 100 ms): nothing else may come.
    await new Promise((r) => setTimeout(r, 1_500));
    const all = receiver.received.filter((h) => h.path === "/flaky" && h.body.includes(id));
    expect(all.map((h) => h.status)).toEqual([500, 500, 500, 200]);
    expect(new Set(all.map((h) => h.headers["wrenn-webhook-id"]))).toEqual(new Set([ok.headers["wrenn-webhook-id"]]));
    expect(all.map((h) => h.headers["wrenn-webhook-attempt"])).toEqual(["1", "2", "3", "4"]);
    // Back-off: each wait is at least half of 200 ms · 2^(n−1).
    const gaps = all.slice(1).map((h, i) => h.at - (all[i]?.at ?? 0));
    gaps.forEach((gap, i) => {
      expect(gap).toBeGreaterThanOrEqual(0.5 * 200 * 2 ** i - 20);
    });

    const log = await call(edge.url, key, "GET", `/v1/webhooks/${hook.id}/deliveries`);
    const { deliveries } = (await log.json()) as {
      deliveries: Array<{
        id: string;
        status: string;
        attempts: number;
        log: Array<{ ok: boolean; statusCode: number; durationMs: number }>;
      }>;
    };
    expect(deliveries).toHaveLength(1);
    expect(deliveries[0]).toMatchObject({ id: ok.headers["wrenn-webhook-id"], status: "succeeded", attempts: 4 });
    expect(deliveries[0]?.log.map((a) => [a.ok, a.statusCode])).toEqual([
      [false, 500],
      [false, 500],
      [false, 500],
      [true, 200],
    ]);
    expect(deliveries[0]?.log.every((a) => a.durationMs >= 0)).toBe(true);

    // Manual redelivery: a new delivery of the same event, sent once.
    const again = await call(
      edge.url,
      key,
      "POST",
      `/v1/webhooks/${hook.id}/deliveries/${deliveries[0]?.id}/redeliver`,
    );
    expect(again.status).toBe(202);
    const redelivery = (await again.json()) as { id: string };
    const resent = await receiver.waitFor((h) => h.headers["wrenn-webhook-id"] === redelivery.id && h.status === 200);
    expect(JSON.parse(resent.body)).toMatchObject({ type: "sandbox.killed", sandboxId: id });
    receiver.respond = () => 200;
  });

  it("delivers an event after the edge was killed (SIGKILL) between the event and the delivery", async () => {
    if (!agent || !receiver) throw new Error("not started");
    const dataDir = await mkdtemp(join(tmpdir(), "wrenn-webhooks-"));
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const env = {
      ...process.env,
      ...webhookEnv,
      WRENN_PORT: String(port),
      WRENN_HOST: "127.0.0.1",
      WRENN_DATA_DIR: dataDir,
      WRENN_ENCRYPTION_KEY: encryptionKey,
      WRENN_ADMIN_API_KEY: adminKey,
      WRENN_LOG_LEVEL: "warn",
    };
    const startEdge = (interval: string): ChildProcess =>
      spawn(process.execPath, ["--import", "tsx", join(repoRoot, "edge/node.ts")], {
        cwd: repoRoot,
        env: { ...env, WRENN_WEBHOOK_INTERVAL_MS: interval },
        stdio: ["ignore", "pipe", "pipe"],
      });
    // The first edge never runs its delivery loop, so every delivery is still queued when it dies.
    let child = startEdge("0");
    let watched = watchChild(child);
    try {
      await waitForDatabase(port, 60_000);
      const registered = await call(base, adminKey, "POST", "/v1/hosts", { address: agent.url, token: agent.token });
      expect(registered.status).toBe(201);
      const teamKey = await (async () => {
        const made = await call(base, adminKey, "POST", "/v1/api-keys", { name: "restart", newTeamName: "restart" });
        return ((await made.json()) as { secret: string }).secret;
      })();
      const hook = await createWebhook(base, teamKey, "/restart", ["sandbox.killed"]);
      const id = await createAndKill(base, teamKey);
      const queued = await call(base, teamKey, "GET", `/v1/webhooks/${hook.id}/deliveries`);
      expect(((await queued.json()) as { deliveries: Array<{ status: string }> }).deliveries).toMatchObject([
        { status: "pending" },
      ]);
      const pid = child.pid;
      if (pid === undefined) throw new Error("no pid");
      process.kill(pid, "SIGKILL");
      expect(await watched.exited).toBeNull();
      expect(receiver.received.some((h) => h.path === "/restart")).toBe(false);

      child = startEdge("100");
      watched = watchChild(child);
      await waitForDatabase(port, 60_000);
      const got = await receiver.waitFor(hookFor("/restart", "sandbox.killed", id), 20_000);
      expect(await verifyWebhookSignature(hook.secret, got.headers, got.body)).toBe(true);
      const log = await call(base, teamKey, "GET", `/v1/webhooks/${hook.id}/deliveries`);
      expect(
        ((await log.json()) as { deliveries: Array<{ status: string; attempts: number }> }).deliveries,
      ).toMatchObject([{ status: "succeeded", attempts: 1 }]);
    } finally {
      if (child.pid !== undefined && watched.exitCode() === undefined) {
        process.kill(child.pid, "SIGTERM");
        const stopped = await Promise.race([
          watched.exited.then(() => true),
          new Promise((r) => setTimeout(() => r(false), 10_000)),
        ]);
        if (!stopped) process.kill(child.pid, "SIGKILL");
        await watched.exited;
      }
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 180_000);
});
