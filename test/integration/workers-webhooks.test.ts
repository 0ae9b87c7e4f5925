import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readServerSentEvents } from "../../sdk/sse.js";
import { verifyWebhookSignature } from "../../sdk/webhooks.js";
import { type ScriptedAgent, startScriptedAgent } from "../helpers/reconcile-scripted-agent.js";
import { startWebhookReceiver, type WebhookReceiver } from "../helpers/webhook-receiver.js";
import { startWorkersStack, type WorkersStack } from "../helpers/workers-stack.js";

/**
 * Events and webhooks on the real Workers runtime (workerd through wrangler, PostgreSQL through the
 * Neon driver): deliveries wait for the cron trigger (`/__scheduled`), never for the request that
 * caused the event, and the event stream answers in its long-polling form.
 */

let stack: WorkersStack | undefined;
let agent: ScriptedAgent | undefined;
let receiver: WebhookReceiver | undefined;

beforeAll(async () => {
  receiver = await startWebhookReceiver();
  agent = await startScriptedAgent();
  stack = await startWorkersStack({ testScheduled: true, bindings: { WRENN_WEBHOOKS_ALLOW_PRIVATE: "true" } });
});

afterAll(async () => {
  await stack?.close();
  await agent?.stop();
  await receiver?.close();
});

describe("events and webhooks on Workers", () => {
  it("queues a delivery with the event and sends it, signed, on the next cron event", async () => {
    if (!stack || !agent || !receiver) throw new Error("not started");
    const made = await stack.call(stack.adminKey, "POST", "/v1/webhooks", {
      url: `${receiver.url}/workers`,
      eventTypes: ["host.*"],
    });
    expect(made.status, JSON.stringify(made.json)).toBe(201);
    const secret = String(made.json.secret);
    const host = await stack.call(stack.adminKey, "POST", "/v1/hosts", { address: agent.url, token: agent.token });
    expect(host.status, JSON.stringify(host.json)).toBe(201);
    // The request that caused the event does not deliver it.
    await new Promise((r) => setTimeout(r, 500));
    expect(receiver.received.filter((h) => h.path === "/workers")).toEqual([]);

    const cron = await stack.worker.fetch("http://edge.test/__scheduled?cron=*+*+*+*+*");
    expect(cron.status).toBe(200);
    await cron.text();
    const got = await receiver.waitFor((h) => h.path === "/workers" && h.body.includes('"type":"host.up"'), 15_000);
    expect(await verifyWebhookSignature(secret, got.headers, got.body)).toBe(true);
    expect(JSON.parse(got.body)).toMatchObject({ type: "host.up", hostId: host.json.id, teamId: null });
  });

  it("answers the event stream by long polling: the events after Last-Event-ID, then the client comes back", async () => {
    if (!stack) throw new Error("not started");
    const res = await stack.worker.fetch("http://edge.test/v1/events/stream", {
      headers: { "x-api-key": stack.adminKey, "last-event-id": "evt_0" },
    });
    expect(res.status).toBe(200);
    const body = await res.text();
    expect(body.startsWith("retry: 100\n")).toBe(true);
    const types: string[] = [];
    for await (const m of readServerSentEvents(new Response(body).body as ReadableStream<Uint8Array>))
      types.push(m.event);
    expect(types).toContain("host.up");
  });
});
