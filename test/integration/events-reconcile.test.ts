import { and, eq, inArray } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { events, hosts, sandboxes, webhookAttempts, webhookDeliveries } from "../../edge/db/schema/index.js";
import { applyEventRetention } from "../../edge/services/events/retention.js";
import type { ReconcileOptions } from "../../edge/services/reconcile/options.js";
import { runReconcileSweep } from "../../edge/services/reconcile/sweep.js";
import { SandboxState, StopReason } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { createEdgeHarness, type EdgeHarness } from "../helpers/edge-app.js";
import { registerHost, seedSandbox } from "../helpers/edge-seed.js";
import { refuseSandboxUpdates } from "../helpers/reconcile-db-fault.js";
import { type ScriptedAgent, startScriptedAgent } from "../helpers/reconcile-scripted-agent.js";

/**
 * What the reconcile sweep records for users: the host's own reports (timeouts its reaper carried
 * out, pauses at the timeout) and its health become events, written by the sweep's statement itself,
 * with their webhook deliveries queued in it, once, and not at all when the statement fails.
 */

const fast: Partial<ReconcileOptions> = { unhealthyAfterFailures: 2, hostTimeoutMs: 2_000, actionTimeoutMs: 5_000 };

let h: EdgeHarness;
let team: { key: string; teamId: string };
let webhookId = "";
const agents: ScriptedAgent[] = [];

beforeAll(async () => {
  h = await createEdgeHarness({ realAgents: true });
  team = await h.newTeam("events-reconcile");
  const made = await h.request("POST", "/v1/webhooks", {
    key: team.key,
    json: { url: "https://hooks.example.com/wrenn", eventTypes: ["sandbox.timed_out", "sandbox.paused"] },
  });
  expect(made.status).toBe(201);
  webhookId = ((await made.json()) as { id: string }).id;
}, 60_000);

afterEach(async () => {
  for (const agent of agents.splice(0)) await agent.stop();
  await h.database.db.delete(sandboxes);
  await h.database.db.delete(hosts);
});

afterAll(async () => {
  await h?.close();
});

async function newHost() {
  const agent = await startScriptedAgent();
  agents.push(agent);
  return { agent, hostId: await registerHost(h, agent) };
}

const sweep = () => runReconcileSweep(h.services(), fast);
const eventsOf = (sandboxId: string) =>
  h.database.db.select().from(events).where(eq(events.sandboxId, sandboxId)).orderBy(events.id);

describe("events from the reconcile sweep", () => {
  it("a timeout the host's reaper carried out is sandbox.timed_out once, with its delivery queued; a failed write records nothing", async () => {
    const { agent, hostId } = await newHost();
    const id = await seedSandbox(h, { teamId: team.teamId, hostId }, { state: "running" });
    agent.put({ id });
    agent.reap(id, StopReason.TIMEOUT);
    const allow = await refuseSandboxUpdates(h.database.db);
    try {
      await sweep();
    } finally {
      await allow();
    }
    expect(await eventsOf(id)).toEqual([]);
    await sweep();
    await sweep();
    const recorded = await eventsOf(id);
    expect(recorded.map((e) => [e.type, e.actor, e.teamId])).toEqual([["sandbox.timed_out", "reconcile", team.teamId]]);
    expect(recorded[0]?.data).toMatchObject({ fromState: "running", toState: "stopped", stopReason: "timeout" });
    const queued = await h.database.db
      .select()
      .from(webhookDeliveries)
      .where(and(eq(webhookDeliveries.webhookId, webhookId), eq(webhookDeliveries.eventId, recorded[0]?.id ?? -1)));
    expect(queued.map((d) => [d.status, d.eventType])).toEqual([["pending", "sandbox.timed_out"]]);
  });

  it("a pause the host made at the timeout is sandbox.paused", async () => {
    const { agent, hostId } = await newHost();
    const id = await seedSandbox(
      h,
      { teamId: team.teamId, hostId },
      { state: "running", endAt: new Date(Date.now() + 60_000) },
    );
    agent.put({ id, state: SandboxState.PAUSED });
    await sweep();
    expect((await eventsOf(id)).map((e) => e.type)).toEqual(["sandbox.paused"]);
  });

  it("a host that stops answering is host.down once, and host.up when it answers again", async () => {
    const { agent, hostId } = await newHost();
    await agent.stop();
    for (let i = 0; i < 4; i++) await sweep();
    await agent.start();
    await sweep();
    const hostEvents = await h.database.db
      .select()
      .from(events)
      .where(and(eq(events.hostId, hostId), inArray(events.type, ["host.down", "host.up"])))
      .orderBy(events.id);
    // The first host.up is the registration.
    expect(hostEvents.map((e) => [e.type, e.actor])).toEqual([
      ["host.up", "api"],
      ["host.down", "reconcile"],
      ["host.up", "reconcile"],
    ]);
    expect(hostEvents.every((e) => e.teamId === null)).toBe(true);
  });

  it("retention drops events and settled deliveries past 30 days, and keeps recent and pending ones", async () => {
    const db = h.database.db;
    const old = new Date(Date.now() - 31 * 86_400_000);
    const [oldEvent] = await db
      .insert(events)
      .values({ teamId: team.teamId, type: "sandbox.killed", createdAt: old })
      .returning();
    const [newEvent] = await db.insert(events).values({ teamId: team.teamId, type: "sandbox.killed" }).returning();
    const [settled] = await db
      .insert(webhookDeliveries)
      .values({
        webhookId,
        teamId: team.teamId,
        eventType: "sandbox.killed",
        status: "succeeded",
        createdAt: old,
        updatedAt: old,
      })
      .returning();
    const [pending] = await db
      .insert(webhookDeliveries)
      .values({ webhookId, teamId: team.teamId, eventType: "sandbox.killed", createdAt: old, updatedAt: old })
      .returning();
    await db
      .insert(webhookAttempts)
      .values({ deliveryId: settled?.id ?? "", attempt: 1, ok: true, durationMs: 1, startedAt: old });
    const gone = await applyEventRetention(db, new Date());
    expect(gone.events).toBeGreaterThanOrEqual(1);
    const left = await db
      .select({ id: events.id })
      .from(events)
      .where(inArray(events.id, [oldEvent?.id ?? 0, newEvent?.id ?? 0]));
    expect(left.map((e) => e.id)).toEqual([newEvent?.id]);
    const deliveriesLeft = await db
      .select({ id: webhookDeliveries.id })
      .from(webhookDeliveries)
      .where(inArray(webhookDeliveries.id, [settled?.id ?? "", pending?.id ?? ""]));
    expect(deliveriesLeft.map((d) => d.id)).toEqual([pending?.id]);
    expect(
      await db
        .select()
        .from(webhookAttempts)
        .where(eq(webhookAttempts.deliveryId, settled?.id ?? "")),
    ).toEqual([]);
  });
});
