import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { events, webhookDeliveries } from "../../edge/db/schema/index.js";
import { recordEvent } from "../../edge/services/events/record.js";
import { runWebhookDeliveries } from "../../edge/services/webhooks/deliver.js";
import { enqueueCallback } from "../../edge/services/webhooks/enqueue.js";
import { defaultWebhookSettings } from "../../edge/services/webhooks/settings.js";
import { verifyWebhookSignature } from "../../sdk/webhooks.js";
import { createEdgeHarness, type EdgeHarness } from "../helpers/edge-app.js";

/**
 * The delivery loop's edges, run by hand against receivers on loopback: auto-disable with its event,
 * no redirects followed, a bounded read of the answer, the attempt deadline, the SSRF guard at send
 * time, and one-off callbacks signed with the team's callback secret.
 */

let h: EdgeHarness;
let server: Server;
let base = "";
let hits: Array<{ path: string; headers: Record<string, unknown>; body: string }> = [];

beforeAll(async () => {
  h = await createEdgeHarness({
    config: {
      webhooks: { ...defaultWebhookSettings, allowPrivate: true, retryBaseMs: 1, disableAfter: 3, timeoutMs: 500 },
    },
  });
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      hits.push({ path: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString() });
      if (req.url === "/fail") res.writeHead(503).end("down");
      else if (req.url === "/redirect") res.writeHead(302, { location: `${base}/ok` }).end();
      else if (req.url === "/slow") setTimeout(() => res.writeHead(200).end("late"), 2_000);
      else if (req.url === "/huge") {
        // An endless answer: the loop must stop reading after a few KiB.
        res.writeHead(200, { "content-type": "text/plain" });
        const chunk = "x".repeat(64 * 1024);
        const pump = () => {
          while (res.write(chunk)) {}
          res.once("drain", pump);
        };
        pump();
        res.on("close", () => res.removeAllListeners("drain"));
      } else res.writeHead(200).end("ok");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}, 60_000);

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await h.close();
});

async function team() {
  const t = await h.newTeam();
  const res = await h.request("GET", "/v1/teams/me", { key: t.key });
  expect(res.status).toBe(200);
  return t;
}

async function webhook(key: string, path: string) {
  const res = await h.request("POST", "/v1/webhooks", { key, json: { url: `${base}${path}` } });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string; secret: string };
}

async function emit(teamId: string, sandboxId = "s".repeat(20)) {
  const db = h.services().db;
  return db.transaction((tx) => recordEvent(tx, { teamId, type: "sandbox.killed", sandboxId, data: {} }));
}

async function deliveriesOf(webhookId: string) {
  return h.services().db.select().from(webhookDeliveries).where(eq(webhookDeliveries.webhookId, webhookId));
}

/** Runs the loop until nothing is due (retries are 1 ms apart here). */
async function drain(rounds = 10) {
  for (let i = 0; i < rounds; i++) {
    await new Promise((r) => setTimeout(r, 20));
    const outcome = await runWebhookDeliveries(h.services());
    if (outcome.claimed === 0) return;
  }
}

describe("webhook delivery loop", () => {
  it("disables a webhook after N failed attempts in a row and records webhook.disabled", async () => {
    const t = await team();
    const hook = await webhook(t.key, "/fail");
    await emit(t.teamId);
    await drain();
    const got = await h.request("GET", `/v1/webhooks/${hook.id}`, { key: t.key });
    const view = (await got.json()) as { enabled: boolean; disabledReason: string; consecutiveFailures: number };
    expect(view).toMatchObject({ enabled: false, consecutiveFailures: 3 });
    expect(view.disabledReason).toMatch(/3 delivery attempts in a row failed.*HTTP 503/);
    const disabled = await h.services().db.select().from(events).where(eq(events.type, "webhook.disabled"));
    expect(disabled.filter((e) => e.teamId === t.teamId).map((e) => e.data.webhookId)).toEqual([hook.id]);
    // A disabled webhook gets nothing more; re-enabling it clears the count.
    const before = hits.length;
    await emit(t.teamId);
    await drain();
    expect(hits.length).toBe(before);
    const enabled = await h.request("PATCH", `/v1/webhooks/${hook.id}`, { key: t.key, json: { enabled: true } });
    expect(await enabled.json()).toMatchObject({ enabled: true, consecutiveFailures: 0, disabledReason: null });
  });

  it("does not follow redirects, stops reading a large answer, and gives up an attempt at its deadline", async () => {
    const t = await team();
    const redirect = await webhook(t.key, "/redirect");
    const huge = await webhook(t.key, "/huge");
    const slow = await webhook(t.key, "/slow");
    hits = [];
    await emit(t.teamId);
    const started = performance.now();
    await runWebhookDeliveries(h.services());
    expect(performance.now() - started).toBeLessThan(1_900);
    expect(hits.some((x) => x.path === "/ok")).toBe(false);
    const [r] = await deliveriesOf(redirect.id);
    expect(r).toMatchObject({
      status: "pending",
      lastStatusCode: 302,
      lastError: "redirect not followed",
      attempts: 1,
    });
    const [big] = await deliveriesOf(huge.id);
    expect(big).toMatchObject({ status: "succeeded", lastStatusCode: 200 });
    const [late] = await deliveriesOf(slow.id);
    expect(late).toMatchObject({ status: "pending", lastStatusCode: null, lastError: "timed out", attempts: 1 });
  });

  it("refuses a private address at send time when private addresses are not allowed", async () => {
    const t = await team();
    const hook = await webhook(t.key, "/ok");
    await emit(t.teamId);
    hits = [];
    const strict = { ...h.services(), config: { ...h.config, webhooks: { ...defaultWebhookSettings } } };
    await runWebhookDeliveries(strict);
    expect(hits).toEqual([]);
    const [d] = await deliveriesOf(hook.id);
    expect(d?.lastError).toMatch(/refused: 127\.0\.0\.1 is loopback/);
  });

  it("sends a queued callback once, signed with the team's callback secret", async () => {
    const t = await team();
    const secretRes = await h.request("GET", "/v1/webhooks/callback-secret", { key: t.key });
    const { secret } = (await secretRes.json()) as { secret: string };
    hits = [];
    const queued = await h.services().db.transaction((tx) =>
      enqueueCallback(tx, {
        teamId: t.teamId,
        url: `${base}/callback`,
        event: { type: "command.finished", sandboxId: "c".repeat(20), data: { exitCode: 0 } },
      }),
    );
    await drain();
    const got = hits.filter((x) => x.path === "/callback");
    expect(got).toHaveLength(1);
    expect(got[0]?.headers["wrenn-webhook-id"]).toBe(queued.deliveryId);
    expect(JSON.parse(got[0]?.body ?? "{}")).toMatchObject({
      id: queued.callbackId,
      type: "command.finished",
      data: { exitCode: 0 },
    });
    expect(await verifyWebhookSignature(secret, got[0]?.headers as Record<string, string>, got[0]?.body ?? "")).toBe(
      true,
    );
  });
});
