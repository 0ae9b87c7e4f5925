import { Code, ConnectError } from "@connectrpc/connect";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hosts, sandboxes } from "../../edge/db/schema/index.js";
import { newSandboxId } from "../../edge/services/ids.js";
import type { ReconcileOptions } from "../../edge/services/reconcile/options.js";
import { runReconcileSweep } from "../../edge/services/reconcile/sweep.js";
import { SandboxState, TimeoutAction } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { IMAGES_ROOT, requireImage, requireRoot, TEMPLATE } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { createEdgeHarness, type EdgeHarness } from "../helpers/edge-app.js";
import { registerHost, storedSandbox } from "../helpers/edge-seed.js";
import { refuseSandboxUpdates } from "../helpers/reconcile-db-fault.js";

/**
 * Each convergence rule against the real host agent (namespace runtime: real processes, namespaces,
 * cgroups) and the edge's real services on PGlite. Sandboxes are created through the API, then
 * changed behind the edge's back on the agent (or in the database), and one sweep must converge them.
 */

const options: Partial<ReconcileOptions> = { hostTimeoutMs: 3_000, orphanGraceMs: 30_000, stuckAfterMs: 120_000 };

let h: EdgeHarness;
let agent: AgentProcess;
let restarted: AgentProcess | undefined;
let key: string;
let teamId: string;
let hostId: string;

beforeAll(async () => {
  requireRoot();
  await requireImage();
  h = await createEdgeHarness({ realAgents: true });
  ({ key, teamId } = await h.newTeam("reconcile-agent"));
  agent = await startAgentProcess({ runtime: "namespace", rootDir: IMAGES_ROOT });
  hostId = await registerHost(h, agent);
});

afterAll(async () => {
  await restarted?.stop().catch(() => {});
  await agent?.stop().catch(() => {});
  await h?.close();
});

async function create(body: Record<string, unknown> = {}): Promise<string> {
  const res = await h.request("POST", "/v1/sandboxes", { key, json: { template: TEMPLATE, timeoutSec: 600, ...body } });
  expect(res.status, await res.clone().text()).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

const row = (id: string) => storedSandbox(h, id);

/** The agent's view of one sandbox (GetSandbox, which also answers for one stopped recently). */
async function onAgent(id: string, client = agent.client): Promise<SandboxState | "gone"> {
  try {
    const res = await client.getSandbox({ sandboxId: id });
    return res.sandbox?.state ?? "gone";
  } catch (err) {
    if (ConnectError.from(err).code === Code.NotFound) return "gone";
    throw err;
  }
}

async function waitOnAgent(id: string, want: SandboxState | "gone", timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let state = await onAgent(id);
  while (state !== want && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    state = await onAgent(id);
  }
  expect(state).toBe(want);
}

const sweep = (extra: Partial<ReconcileOptions> = {}) => runReconcileSweep(h.services(), { ...options, ...extra });

describe("reconcile rules against the real agent (namespace runtime)", () => {
  it("stopped: destroyed on the agent behind the edge's back → stopped, reason lost", async () => {
    const id = await create();
    await agent.client.destroySandbox({ sandboxId: id });
    await sweep();
    const r = await row(id);
    expect([r.state, r.stopReason]).toEqual(["stopped", "lost"]);
  });

  it("stopped: the agent's reaper killed it on timeout → stopped, reason timeout", async () => {
    const id = await create({ timeoutSec: 2, onTimeout: "kill" });
    await waitOnAgent(id, SandboxState.STOPPED);
    await sweep();
    const r = await row(id);
    expect([r.state, r.stopReason]).toEqual(["stopped", "timeout"]);
  });

  it("stopped: a sweep that dies after listing, then an agent restart, and the next sweep still records timeout", async () => {
    const id = await create({ timeoutSec: 2, onTimeout: "kill" });
    await waitOnAgent(id, SandboxState.STOPPED);
    const reapsOf = async () =>
      (await agent.client.listSandboxes({})).reaps.filter((r) => r.sandbox?.sandboxId === id).map((r) => r.reapId);
    const [reapId] = await reapsOf();
    expect(reapId).toMatch(/^reap_/);

    // The sweep lists the host, then its database write fails: nothing may be lost.
    const allow = await refuseSandboxUpdates(h.database.db);
    let died: Awaited<ReturnType<typeof sweep>>;
    try {
      died = await sweep();
    } finally {
      await allow();
    }
    expect(died.hostsFailed).toBe(1);
    expect((await row(id)).state).toBe("running");
    expect(await reapsOf()).toEqual([reapId]);

    // The agent goes down hard and comes back on the same state before the next sweep.
    agent.kill9();
    agent = await startAgentProcess(agent.restartOptions);
    expect(await reapsOf()).toEqual([reapId]);

    await sweep();
    const r = await row(id);
    expect([r.state, r.stopReason]).toEqual(["stopped", "timeout"]);
    // Recorded, so acknowledged: the host no longer reports it.
    expect(await reapsOf()).toEqual([]);
  });

  it("synced: the agent's reaper auto-paused it → paused", async () => {
    const id = await create({ timeoutSec: 2, onTimeout: "pause" });
    await waitOnAgent(id, SandboxState.PAUSED);
    await sweep();
    const r = await row(id);
    expect([r.state, r.endAt]).toEqual(["paused", null]);
  });

  it("expired: past end_at in the database while the agent still runs it → stopped (timeout) and destroyed", async () => {
    const id = await create({ timeoutSec: 600 });
    await h.database.db
      .update(sandboxes)
      .set({ endAt: new Date(Date.now() - 1000) })
      .where(eq(sandboxes.id, id));
    const summary = await sweep();
    expect(summary.changed.expired).toBeGreaterThanOrEqual(1);
    const r = await row(id);
    expect([r.state, r.stopReason]).toEqual(["stopped", "timeout"]);
    expect(["gone", SandboxState.STOPPED]).toContain(await onAgent(id));
  });

  it("orphaned: started on the agent but unknown to the database → destroyed", async () => {
    const id = newSandboxId();
    await agent.client.createSandbox({ sandboxId: id, template: TEMPLATE, timeoutSec: 600 });
    await sweep({ orphanGraceMs: 0 });
    expect(["gone", SandboxState.STOPPED]).toContain(await onAgent(id));
  });

  it("stuck: pending far too long → error, and cleaned up on the agent", async () => {
    const id = newSandboxId();
    await agent.client.createSandbox({
      sandboxId: id,
      template: TEMPLATE,
      timeoutSec: 600,
      timeoutAction: TimeoutAction.KILL,
    });
    const long = new Date(Date.now() - 600_000);
    await h.database.db.insert(sandboxes).values({
      id,
      teamId,
      hostId,
      template: TEMPLATE,
      state: "pending",
      vcpus: 1,
      memoryMb: 256,
      timeoutSec: 600,
      envdTokenSealed: await h.secrets.seal("unused"),
      createdAt: long,
      updatedAt: long,
    });
    await sweep();
    expect((await row(id)).state).toBe("error");
    expect(["gone", SandboxState.STOPPED]).toContain(await onAgent(id));
  });

  it("health: agent down for N sweeps → unhealthy + missing; agent back → active + restored", async () => {
    const id = await create({ timeoutSec: 600 });
    agent.kill9();
    for (let i = 0; i < 3; i++) await sweep();
    const [down] = await h.database.db.select().from(hosts).where(eq(hosts.id, hostId));
    expect(down?.status).toBe("unhealthy");
    expect((await row(id)).state).toBe("missing");

    // The sandbox outlived its agent; a new agent on the same state adopts it.
    restarted = await startAgentProcess(agent.restartOptions);
    expect(await onAgent(id, restarted.client)).toBe(SandboxState.RUNNING);
    const back = await sweep();
    expect(back.hostsRecovered).toEqual([hostId]);
    const [up] = await h.database.db.select().from(hosts).where(eq(hosts.id, hostId));
    expect([up?.status, up?.consecutiveFailures]).toEqual(["active", 0]);
    expect((await row(id)).state).toBe("running");
  });
});
