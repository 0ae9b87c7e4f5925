import { Code } from "@connectrpc/connect";
import { eq } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { hosts, type SandboxRow, sandboxEvents, sandboxes } from "../../edge/db/schema/index.js";
import { newSandboxId } from "../../edge/services/ids.js";
import { acquireLease, reconcileLeaseName } from "../../edge/services/reconcile/lease.js";
import type { ReconcileOptions } from "../../edge/services/reconcile/options.js";
import { runReconcileSweep } from "../../edge/services/reconcile/sweep.js";
import { pickHost } from "../../edge/services/scheduler/pick-host.js";
import { SandboxState, StopReason, TimeoutAction } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { createEdgeHarness, type EdgeHarness } from "../helpers/edge-app.js";
import { registerHost, seedSandbox, storedSandbox } from "../helpers/edge-seed.js";
import { refuseSandboxUpdates } from "../helpers/reconcile-db-fault.js";
import { type ScriptedAgent, startScriptedAgent } from "../helpers/reconcile-scripted-agent.js";

/**
 * Each convergence rule of the reconcile sweep, at the protocol boundary: the edge's real services
 * and connect-web client against PGlite, and real HostAgentService servers on loopback whose
 * sandboxes are scripted per test. (reconcile-agent.test.ts runs the same rules against the real
 * agent with the namespace runtime.)
 */

const fast: Partial<ReconcileOptions> = {
  orphanGraceMs: 30_000,
  stuckAfterMs: 120_000,
  unhealthyAfterFailures: 3,
  hostTimeoutMs: 2_000,
  actionTimeoutMs: 5_000,
};
const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000);

let h: EdgeHarness;
let teamId: string;
const agents: ScriptedAgent[] = [];

beforeAll(async () => {
  h = await createEdgeHarness({ realAgents: true });
  teamId = (await h.newTeam("reconcile")).teamId;
});

afterEach(async () => {
  // Each test's host leaves with it, so later sweeps only see their own.
  for (const agent of agents.splice(0)) await agent.stop();
  const db = h.database.db;
  await db.delete(sandboxes);
  await db.delete(hosts);
});

afterAll(async () => {
  await h?.close();
});

async function newHost(): Promise<{ agent: ScriptedAgent; hostId: string }> {
  const agent = await startScriptedAgent();
  agents.push(agent);
  return { agent, hostId: await registerHost(h, agent) };
}

function seed(hostId: string, fields: Partial<SandboxRow> & { state: SandboxRow["state"] }): Promise<string> {
  return seedSandbox(h, { teamId, hostId }, fields);
}

const row = (id: string) => storedSandbox(h, id);

const sweep = (extra: Partial<ReconcileOptions> = {}) => runReconcileSweep(h.services(), { ...fast, ...extra });

describe("reconcile rules against scripted agents", () => {
  it("stopped: running in the DB but gone from the host → stopped, reason lost", async () => {
    const { hostId } = await newHost();
    const id = await seed(hostId, { state: "running" });
    const summary = await sweep();
    expect(summary.ran).toBe(true);
    expect(summary.changed.stopped).toBe(1);
    const r = await row(id);
    expect(r.state).toBe("stopped");
    expect(r.stopReason).toBe("lost");
    expect(r.stoppedAt).not.toBeNull();
    const events = await h.database.db.select().from(sandboxEvents).where(eq(sandboxEvents.sandboxId, id));
    expect(events.map((e) => [e.actor, e.fromState, e.toState])).toEqual([["reconcile", "running", "stopped"]]);
  });

  it("stopped: the host's reaper reports a timeout → stopped, reason timeout", async () => {
    const { agent, hostId } = await newHost();
    const id = await seed(hostId, { state: "running" });
    agent.put({ id });
    agent.reap(id, StopReason.TIMEOUT);
    await sweep();
    const r = await row(id);
    expect([r.state, r.stopReason]).toEqual(["stopped", "timeout"]);
  });

  it("reaps: a sweep whose database write fails leaves them with the host; the next records timeout and acknowledges", async () => {
    const { agent, hostId } = await newHost();
    const id = await seed(hostId, { state: "running" });
    agent.put({ id });
    const reap = agent.reap(id, StopReason.TIMEOUT);
    const allow = await refuseSandboxUpdates(h.database.db);
    let failed: Awaited<ReturnType<typeof sweep>>;
    try {
      failed = await sweep();
    } finally {
      await allow();
    }
    expect([failed.hostsSeen, failed.hostsFailed]).toEqual([0, 1]);
    expect((await row(id)).state).toBe("running");
    expect(agent.calls).not.toContain("acknowledgeReaped");
    expect(agent.reaped.map((r) => r.reapId)).toEqual([reap.reapId]);

    await sweep();
    const r = await row(id);
    expect([r.state, r.stopReason]).toEqual(["stopped", "timeout"]);
    expect(agent.acknowledged).toEqual([reap.reapId]);
    expect(agent.reaped).toEqual([]);
  });

  it("reaps: a failed acknowledgement is retried by the next sweep, which changes nothing twice", async () => {
    const { agent, hostId } = await newHost();
    const id = await seed(hostId, { state: "running" });
    agent.put({ id });
    const reap = agent.reap(id, StopReason.TIMEOUT);
    agent.failing.set("acknowledgeReaped", Code.Unavailable);
    const first = await sweep();
    expect(first.changed.stopped).toBe(1);
    expect(agent.reaped.map((r) => r.reapId)).toEqual([reap.reapId]);
    agent.failing.delete("acknowledgeReaped");
    const second = await sweep();
    expect(second.changed.stopped).toBe(0);
    expect(agent.acknowledged).toEqual([reap.reapId]);
    const events = await h.database.db.select().from(sandboxEvents).where(eq(sandboxEvents.sandboxId, id));
    expect(events).toHaveLength(1);
  });

  it("synced: the host auto-paused a sandbox → paused, end_at cleared", async () => {
    const { agent, hostId } = await newHost();
    const id = await seed(hostId, { state: "running", endAt: new Date(Date.now() + 60_000) });
    agent.put({ id, state: SandboxState.PAUSED });
    const summary = await sweep();
    expect(summary.changed.synced).toBe(1);
    const r = await row(id);
    expect(r.state).toBe("paused");
    expect(r.endAt).toBeNull();
  });

  it("orphaned: unknown to the DB past the grace period → destroyed on the host; a young one is kept", async () => {
    const { agent } = await newHost();
    const old = newSandboxId();
    const young = newSandboxId();
    agent.put({ id: old, createdAt: minutesAgo(5) });
    agent.put({ id: young, createdAt: new Date() });
    const summary = await sweep();
    expect(summary.changed.orphaned).toBe(1);
    expect(agent.calls).toContain(`destroySandbox ${old}`);
    expect(agent.sandboxes.has(old)).toBe(false);
    expect(agent.sandboxes.has(young)).toBe(true);
  });

  it("orphaned: stopped in the DB but still on the host → destroyed after the grace period", async () => {
    const { agent, hostId } = await newHost();
    const stale = await seed(hostId, { state: "stopped", stopReason: "killed", stoppedAt: minutesAgo(5) });
    const fresh = await seed(hostId, { state: "stopped", stopReason: "killed", stoppedAt: new Date() });
    const failed = await seed(hostId, { state: "error", error: "boom", stoppedAt: minutesAgo(5) });
    for (const id of [stale, fresh, failed]) agent.put({ id, createdAt: minutesAgo(10) });
    await sweep();
    expect(agent.sandboxes.has(stale)).toBe(false);
    expect(agent.sandboxes.has(failed)).toBe(false);
    expect(agent.sandboxes.has(fresh)).toBe(true);
    expect((await row(stale)).state).toBe("stopped");
  });

  it("expired: past end_at with action kill → stopped (timeout) and destroyed on the host", async () => {
    const { agent, hostId } = await newHost();
    const id = await seed(hostId, { state: "running", onTimeout: "kill", endAt: minutesAgo(1) });
    agent.put({ id, endAt: new Date(Date.now() + 60_000) });
    const summary = await sweep();
    expect(summary.changed.expired).toBe(1);
    const r = await row(id);
    expect([r.state, r.stopReason, r.endAt]).toEqual(["stopped", "timeout", null]);
    expect(agent.sandboxes.has(id)).toBe(false);
  });

  it("expired: past end_at with action pause → paused on the host and in the DB", async () => {
    const { agent, hostId } = await newHost();
    const id = await seed(hostId, { state: "running", onTimeout: "pause", endAt: minutesAgo(1) });
    agent.put({ id, timeoutAction: TimeoutAction.PAUSE, endAt: new Date(Date.now() + 60_000) });
    await sweep();
    const r = await row(id);
    expect([r.state, r.endAt]).toEqual(["paused", null]);
    expect(agent.sandboxes.get(id)?.state).toBe(SandboxState.PAUSED);
    const events = await h.database.db.select().from(sandboxEvents).where(eq(sandboxEvents.sandboxId, id));
    expect(events.map((e) => e.toState)).toEqual(["pausing", "paused"]);
  });

  it("expired: a pause the host refuses puts the row back to running for the next sweep", async () => {
    const { agent, hostId } = await newHost();
    const end = minutesAgo(1);
    const id = await seed(hostId, { state: "running", onTimeout: "pause", endAt: end });
    agent.put({ id, endAt: new Date(Date.now() + 60_000) });
    agent.failing.set("pauseSandbox", 13);
    const summary = await sweep();
    expect(summary.actionFailures).toBe(1);
    const r = await row(id);
    expect(r.state).toBe("running");
    expect(r.endAt?.getTime()).toBe(end.getTime());
  });

  it("stuck: pending beyond the limit → error and cleaned up on the host; a fresh pending is left alone", async () => {
    const { agent, hostId } = await newHost();
    const stuck = await seed(hostId, { state: "pending", updatedAt: minutesAgo(10), createdAt: minutesAgo(10) });
    const starting = await seed(hostId, { state: "starting", updatedAt: minutesAgo(10) });
    const fresh = await seed(hostId, { state: "pending" });
    agent.put({ id: stuck, state: SandboxState.STARTING, createdAt: minutesAgo(10) });
    agent.put({ id: fresh, state: SandboxState.STARTING });
    const summary = await sweep();
    expect(summary.changed.stuck).toBe(2);
    expect((await row(stuck)).state).toBe("error");
    expect((await row(stuck)).error).toMatch(/stuck in pending/);
    expect((await row(starting)).state).toBe("error");
    expect(agent.sandboxes.has(stuck)).toBe(false);
    expect((await row(fresh)).state).toBe("pending");
    expect(agent.sandboxes.has(fresh)).toBe(true);
  });

  it("stuck: a pausing left behind by a dead request settles to what the host reports", async () => {
    const { agent, hostId } = await newHost();
    const id = await seed(hostId, { state: "pausing", updatedAt: minutesAgo(10) });
    agent.put({ id, state: SandboxState.PAUSED });
    await sweep();
    expect((await row(id)).state).toBe("paused");
  });

  it("compare-and-set: a row the API changed after the sweep read it is not overwritten", async () => {
    const { agent, hostId } = await newHost();
    const id = await seed(hostId, { state: "running" });
    // The host is slow to answer; meanwhile the API destroys the sandbox (version bump, reason killed).
    agent.listDelayMs = 300;
    const sweeping = sweep();
    await new Promise((r) => setTimeout(r, 100));
    const [current] = await h.database.db.select().from(sandboxes).where(eq(sandboxes.id, id));
    await h.database.db
      .update(sandboxes)
      .set({ state: "stopped", stopReason: "killed", version: (current?.version ?? 0) + 1 })
      .where(eq(sandboxes.id, id));
    const summary = await sweeping;
    expect(summary.changed.stopped).toBe(0);
    const r = await row(id);
    expect([r.state, r.stopReason]).toEqual(["stopped", "killed"]);
  });

  it("lease: a sweep while another holds the lease does nothing; an expired lease is taken over", async () => {
    const { hostId } = await newHost();
    const id = await seed(hostId, { state: "running" });
    expect(await acquireLease(h.database.db, reconcileLeaseName, "someone-else", 400)).toBe(true);
    const skipped = await sweep();
    expect(skipped.ran).toBe(false);
    expect((await row(id)).state).toBe("running");
    await new Promise((r) => setTimeout(r, 500));
    const ran = await sweep();
    expect(ran.ran).toBe(true);
    expect((await row(id)).state).toBe("stopped");
  });

  it("time budget: a sweep whose lease is too short for another host leaves it for the next sweep", async () => {
    const { hostId } = await newHost();
    const id = await seed(hostId, { state: "running" });
    const summary = await sweep({ leaseTtlMs: 1_000 });
    expect([summary.ran, summary.hosts, summary.hostsSkipped, summary.hostsSeen]).toEqual([true, 1, 1, 0]);
    expect((await row(id)).state).toBe("running");
  });

  it("lease: two sweeps started together — exactly one runs", async () => {
    await newHost();
    const [a, b] = await Promise.all([sweep(), sweep()]);
    expect([a.ran, b.ran].sort()).toEqual([false, true]);
  });

  it("health: N failed sweeps → unhealthy and sandboxes missing; back → active and restored", async () => {
    const { agent, hostId } = await newHost();
    const stays = await seed(hostId, { state: "running", endAt: new Date(Date.now() + 600_000) });
    const paused = await seed(hostId, { state: "paused" });
    const vanishes = await seed(hostId, { state: "running" });
    agent.put({ id: stays, endAt: new Date(Date.now() + 600_000) });
    agent.put({ id: paused, state: SandboxState.PAUSED });
    agent.put({ id: vanishes });
    await agent.stop();

    for (let i = 1; i <= 2; i++) {
      const s = await sweep();
      expect(s.hostsFailed).toBe(1);
      const [host] = await h.database.db.select().from(hosts).where(eq(hosts.id, hostId));
      expect([host?.status, host?.consecutiveFailures]).toEqual(["active", i]);
      expect((await row(stays)).state).toBe("running");
    }
    const third = await sweep();
    expect(third.hostsUnhealthy).toEqual([hostId]);
    expect(third.changed.missing).toBe(3);
    const [down] = await h.database.db.select().from(hosts).where(eq(hosts.id, hostId));
    expect(down?.status).toBe("unhealthy");
    expect(down?.lastError).toMatch(/Unavailable|unavailable|ECONNREFUSED|fetch failed/i);
    for (const id of [stays, paused, vanishes]) expect((await row(id)).state).toBe("missing");
    // The scheduler does not place sandboxes on an unhealthy host.
    await expect(pickHost(h.services(), { template: "minimal", vcpus: 1, memoryMb: 256 })).rejects.toThrow(
      /no active host/,
    );

    agent.sandboxes.delete(vanishes);
    await agent.start();
    const back = await sweep();
    expect(back.hostsRecovered).toEqual([hostId]);
    expect(back.changed.restored).toBe(2);
    expect(back.changed.stopped).toBe(1);
    const [up] = await h.database.db.select().from(hosts).where(eq(hosts.id, hostId));
    expect([up?.status, up?.consecutiveFailures, up?.lastError]).toEqual(["active", 0, null]);
    expect((await row(stays)).state).toBe("running");
    expect((await row(paused)).state).toBe("paused");
    expect([(await row(vanishes)).state, (await row(vanishes)).stopReason]).toEqual(["stopped", "lost"]);
    expect((await pickHost(h.services(), { template: "minimal", vcpus: 1, memoryMb: 256 })).id).toBe(hostId);
  });

  it("health: a slow host counts as failed (per-host deadline) and does not hold up the others", async () => {
    const slow = await newHost();
    const quick = await newHost();
    slow.agent.listDelayMs = 3_000;
    const id = await seed(quick.hostId, { state: "running" });
    const t0 = Date.now();
    const summary = await sweep({ hostTimeoutMs: 500 });
    expect(Date.now() - t0).toBeLessThan(2_500);
    expect([summary.hostsSeen, summary.hostsFailed]).toEqual([1, 1]);
    expect((await row(id)).state).toBe("stopped");
  });

  it("health: a draining host stays draining when it fails, and takes no new sandboxes", async () => {
    const { agent, hostId } = await newHost();
    const res = await h.request("POST", `/v1/hosts/${hostId}/drain`, { key: h.adminKey });
    expect(res.status).toBe(200);
    await expect(pickHost(h.services(), { template: "minimal", vcpus: 1, memoryMb: 256 })).rejects.toThrow(
      /no active host/,
    );
    const id = await seed(hostId, { state: "running" });
    agent.put({ id });
    await agent.stop();
    for (let i = 0; i < 3; i++) await sweep();
    const [host] = await h.database.db.select().from(hosts).where(eq(hosts.id, hostId));
    expect(host?.status).toBe("draining");
    expect((await row(id)).state).toBe("missing");
    await agent.start();
    await sweep();
    const [after] = await h.database.db.select().from(hosts).where(eq(hosts.id, hostId));
    expect(after?.status).toBe("draining");
    expect((await row(id)).state).toBe("running");
  });
});
