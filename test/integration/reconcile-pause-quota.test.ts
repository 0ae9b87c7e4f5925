import { create } from "@bufbuild/protobuf";
import { and, eq, inArray } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { hosts, type SandboxRow, sandboxEvents, sandboxes } from "../../edge/db/schema/index.js";
import type { ReconcileOptions } from "../../edge/services/reconcile/options.js";
import { runReconcileSweep } from "../../edge/services/reconcile/sweep.js";
import { SandboxState, SnapshotFileSchema, TimeoutAction } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { createEdgeHarness, type EdgeHarness } from "../helpers/edge-app.js";
import { registerHost, seedSandbox, storedSandbox, teamWithQuotas } from "../helpers/edge-seed.js";
import { type PostgresServer, startPostgres } from "../helpers/postgres.js";
import { type ScriptedAgent, startScriptedAgent } from "../helpers/reconcile-scripted-agent.js";

/**
 * A sandbox that reaches its timeout with `onTimeout: "pause"` becomes a paused sandbox, which the
 * team's paused quotas bound as they bound an API pause. When the team is full, the sweep stops the
 * sandbox (reason timeout) instead, decided in the transaction that writes the row, with the team row
 * locked. Real PostgreSQL (so the sweep and an API pause really run at once on separate connections)
 * and scripted agents over HTTP at the protocol boundary.
 */

const options: Partial<ReconcileOptions> = { orphanGraceMs: 30_000, hostTimeoutMs: 5_000, actionTimeoutMs: 5_000 };
const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000);
const MiB = 1024 ** 2;

let pg: PostgresServer | undefined;
let h: EdgeHarness;
let agent: ScriptedAgent;
let hostId = "";

beforeAll(async () => {
  pg = await startPostgres();
  h = await createEdgeHarness({ realAgents: true, databaseUrl: pg.url });
  agent = await startScriptedAgent();
  hostId = await registerHost(h, agent);
}, 120_000);

afterEach(async () => {
  await h.database.db.delete(sandboxes);
  agent.sandboxes.clear();
  agent.calls.length = 0;
});

afterAll(async () => {
  await agent?.stop();
  if (h) await h.database.db.delete(hosts);
  await h?.close();
  await pg?.stop();
});

const teamWith = (quotas: Record<string, unknown>) => teamWithQuotas(h, quotas);

function seed(teamId: string, fields: Partial<SandboxRow> & { state: SandboxRow["state"] }): Promise<string> {
  return seedSandbox(h, { teamId, hostId }, fields);
}

/** A running sandbox past its end, with onTimeout pause, in the database and on the host. */
async function expiring(teamId: string): Promise<string> {
  const id = await seed(teamId, { state: "running", onTimeout: "pause", endAt: minutesAgo(1) });
  agent.put({ id, timeoutAction: TimeoutAction.PAUSE, endAt: new Date(Date.now() + 60_000) });
  return id;
}

const row = (id: string) => storedSandbox(h, id);

const sweep = () => runReconcileSweep(h.services(), options);

describe("timeout pauses and the paused quotas", () => {
  it("with room: the sweep pauses it and records the snapshot size the host reported", async () => {
    const team = await teamWith({ maxPausedSandboxes: 2 });
    await seed(team.teamId, { state: "paused" });
    const id = await expiring(team.teamId);
    const onHost = agent.sandboxes.get(id);
    if (!onHost) throw new Error("not on the host");
    onHost.snapshotFiles = [create(SnapshotFileSchema, { name: "memory", sizeBytes: BigInt(3 * MiB) })];
    await sweep();
    const r = await row(id);
    expect([r.state, r.stopReason, r.snapshotBytes]).toEqual(["paused", null, 3 * MiB]);
    expect(agent.sandboxes.get(id)?.state).toBe(SandboxState.PAUSED);
  });

  it("at maxPausedSandboxes: stopped (timeout) instead, destroyed on the host, and the row says why", async () => {
    const team = await teamWith({ maxPausedSandboxes: 1 });
    await seed(team.teamId, { state: "paused" });
    const id = await expiring(team.teamId);
    const summary = await sweep();
    expect(summary.changed.expired).toBe(1);
    const r = await row(id);
    expect([r.state, r.stopReason, r.endAt]).toEqual(["stopped", "timeout", null]);
    expect(r.error).toMatch(/paused quota was full \(maxPausedSandboxes 1, 1 in use\): stopped instead of paused/);
    expect(agent.sandboxes.has(id)).toBe(false);
    expect(agent.calls).not.toContain(`pauseSandbox ${id}`);
    const events = await h.database.db.select().from(sandboxEvents).where(eq(sandboxEvents.sandboxId, id));
    expect(events.map((e) => [e.fromState, e.toState])).toEqual([["running", "stopped"]]);
    expect(events[0]?.detail).toMatchObject({
      rule: "expired",
      cause: "timeout (pause refused by quota maxPausedSandboxes)",
    });
    // The API shows it the same way.
    const shown = await h.request("GET", `/v1/sandboxes/${id}`, { key: team.key });
    expect(await shown.json()).toMatchObject({ state: "stopped", stopReason: "timeout" });
  });

  it("several at once with room for one: exactly one is paused, the others stopped", async () => {
    const team = await teamWith({ maxPausedSandboxes: 1 });
    const ids = [await expiring(team.teamId), await expiring(team.teamId), await expiring(team.teamId)];
    await sweep();
    const rows = await h.database.db.select().from(sandboxes).where(inArray(sandboxes.id, ids));
    expect(rows.map((r) => r.state).sort()).toEqual(["paused", "stopped", "stopped"]);
    expect(agent.sandboxes.size).toBe(1);
  });

  it("at maxPausedDiskMb: stopped instead", async () => {
    const team = await teamWith({ maxPausedDiskMb: 1 });
    await seed(team.teamId, { state: "paused", snapshotBytes: 2 * MiB });
    const id = await expiring(team.teamId);
    await sweep();
    expect((await row(id)).error).toMatch(/maxPausedDiskMb 1, 2 in use/);
  });

  it("the host's reaper paused it on its own over the quota: the sweep stops it and destroys it there", async () => {
    const team = await teamWith({ maxPausedSandboxes: 1 });
    await seed(team.teamId, { state: "paused" });
    const id = await seed(team.teamId, { state: "running", onTimeout: "pause", endAt: new Date(Date.now() + 1000) });
    agent.put({ id, state: SandboxState.PAUSED });
    await sweep();
    expect([(await row(id)).state, (await row(id)).stopReason]).toEqual(["stopped", "timeout"]);
    expect(agent.sandboxes.has(id)).toBe(false);
    // With room, the same host-made pause is simply recorded.
    const roomy = await teamWith({ maxPausedSandboxes: 5 });
    const kept = await seed(roomy.teamId, { state: "running", onTimeout: "pause", endAt: new Date(Date.now() + 1000) });
    agent.put({ id: kept, state: SandboxState.PAUSED });
    await sweep();
    expect((await row(kept)).state).toBe("paused");
  });

  it("a sweep and an API pause of the same team at once never take it past maxPausedSandboxes", async () => {
    const team = await teamWith({ maxPausedSandboxes: 1 });
    // The agent answers a pause only after changing the sandbox, as a real one does.
    agent.actionDelayMs = 200;
    try {
      for (let round = 0; round < 5; round++) {
        const expired = await expiring(team.teamId);
        const running = await seed(team.teamId, { state: "running", endAt: new Date(Date.now() + 600_000) });
        agent.put({ id: running, endAt: new Date(Date.now() + 600_000) });
        const [, paused] = await Promise.all([
          sweep(),
          h.request("POST", `/v1/sandboxes/${running}/pause`, { key: team.key }),
        ]);
        expect([200, 429]).toContain(paused.status);
        const held = await h.database.db
          .select({ id: sandboxes.id })
          .from(sandboxes)
          .where(and(eq(sandboxes.teamId, team.teamId), inArray(sandboxes.state, ["paused", "pausing"])));
        expect(held.length, `round ${round}`).toBe(1);
        expect([expired, running]).toContain(held[0]?.id);
        await h.database.db.delete(sandboxes).where(eq(sandboxes.teamId, team.teamId));
        agent.sandboxes.clear();
      }
    } finally {
      agent.actionDelayMs = 0;
    }
  });
});
