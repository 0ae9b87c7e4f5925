import { eq } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { hosts, type SandboxRow, sandboxEvents, sandboxes } from "../../edge/db/schema/index.js";
import type { ReconcileOptions } from "../../edge/services/reconcile/options.js";
import { runReconcileSweep } from "../../edge/services/reconcile/sweep.js";
import { SandboxState, TimeoutAction } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { createEdgeHarness, type EdgeHarness } from "../helpers/edge-app.js";
import { registerHost, seedSandbox, storedSandbox } from "../helpers/edge-seed.js";
import { type ScriptedAgent, startScriptedAgent } from "../helpers/reconcile-scripted-agent.js";

/**
 * Issue 17: the host's own end-time timer and the edge's reconcile sweep both act on an expired
 * sandbox. The sweep reads the host (still running), then the timer pauses it, then the sweep's
 * pause arrives: the host refuses ("already paused"), and the sweep must take that as the outcome it
 * wanted — the row paused, with the host's pause kind — rather than put the row back to running.
 * The host is a real HostAgentService server on loopback whose sandboxes are scripted.
 */

const fast: Partial<ReconcileOptions> = {
  orphanGraceMs: 30_000,
  stuckAfterMs: 120_000,
  unhealthyAfterFailures: 3,
  hostTimeoutMs: 2_000,
  actionTimeoutMs: 5_000,
};

let h: EdgeHarness;
let teamId: string;
const agents: ScriptedAgent[] = [];

beforeAll(async () => {
  h = await createEdgeHarness({ realAgents: true });
  teamId = (await h.newTeam("reconcile-timer")).teamId;
});

afterEach(async () => {
  for (const agent of agents.splice(0)) await agent.stop();
  await h.database.db.delete(sandboxes);
  await h.database.db.delete(hosts);
});

afterAll(async () => {
  await h?.close();
});

async function expiredOnHost(fields: Partial<SandboxRow>): Promise<{ agent: ScriptedAgent; id: string }> {
  const agent = await startScriptedAgent();
  agents.push(agent);
  const hostId = await registerHost(h, agent);
  const id = await seedSandbox(
    h,
    { teamId, hostId },
    { state: "running", onTimeout: "pause", endAt: new Date(Date.now() - 1_000), ...fields },
  );
  agent.put({ id, timeoutAction: TimeoutAction.PAUSE, endAt: new Date(Date.now() - 1_000) });
  return { agent, id };
}

describe("the sweep and the host's timer both pause an expired sandbox", () => {
  it("the host pausing first (without memory) makes the sweep record the pause, not undo it", async () => {
    const { agent, id } = await expiredOnHost({ keepMemory: false });
    agent.beforePause = (sandboxId) => {
      const sandbox = agent.sandboxes.get(sandboxId);
      if (!sandbox) return;
      // The timer fired between the sweep's ListSandboxes and its PauseSandbox.
      sandbox.state = SandboxState.PAUSED;
      sandbox.endAt = undefined;
      sandbox.pausedWithoutMemory = true;
    };
    const summary = await runReconcileSweep(h.services(), fast);
    expect(summary.changed.expired).toBe(1);
    const row = await storedSandbox(h, id);
    expect([row.state, row.endAt, row.pausedWithoutMemory]).toEqual(["paused", null, true]);
    const events = await h.database.db.select().from(sandboxEvents).where(eq(sandboxEvents.sandboxId, id));
    expect(events.map((e) => e.toState)).toEqual(["pausing", "paused"]);
    expect(agent.calls).toContain(`pauseSandbox ${id}`);
  });

  it("the sweep's own timeout pause carries the row's keepMemory to the host", async () => {
    const { agent, id } = await expiredOnHost({ keepMemory: false });
    let asked: boolean | undefined;
    agent.beforePause = (sandboxId) => {
      const sandbox = agent.sandboxes.get(sandboxId);
      if (sandbox) asked = sandbox.state === SandboxState.RUNNING;
    };
    await runReconcileSweep(h.services(), fast);
    expect(asked).toBe(true);
    expect(agent.lastPauseKeepMemory).toBe(false);
    const row = await storedSandbox(h, id);
    expect([row.state, row.pausedWithoutMemory]).toEqual(["paused", true]);
  });
});
