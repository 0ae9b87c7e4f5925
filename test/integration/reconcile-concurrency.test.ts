import { asc, eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sandboxEvents, sandboxes } from "../../edge/db/schema/index.js";
import { runReconcileSweep } from "../../edge/services/reconcile/sweep.js";
import { SandboxState } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { createEdgeHarness, type EdgeHarness } from "../helpers/edge-app.js";
import { registerHost } from "../helpers/edge-seed.js";
import { type PostgresServer, startPostgres } from "../helpers/postgres.js";
import { type ScriptedAgent, startScriptedAgent } from "../helpers/reconcile-scripted-agent.js";

/**
 * Sweeps run back to back while the API creates, pauses and deletes sandboxes on the same host.
 * Every API change must survive (no lost update) and no stopped sandbox may come back (no
 * resurrection). The orphan grace period is 0, the harshest setting: a create in flight must still
 * not be mistaken for an orphan. It runs on PGlite (one connection, statements take turns) and on a
 * real PostgreSQL server, where the sweep's and the API's statements run at the same time on
 * separate connections and meet at row locks.
 */

interface Stack {
  h: EdgeHarness;
  agent: ScriptedAgent;
  key: string;
  pg?: PostgresServer;
}

async function startStack(database: "pglite" | "postgres"): Promise<Stack> {
  const pg = database === "postgres" ? await startPostgres() : undefined;
  const h = await createEdgeHarness({ realAgents: true, ...(pg ? { databaseUrl: pg.url } : {}) });
  const team = await h.newTeam("concurrency");
  const key = team.key;
  // 24 sandboxes at once is over the default team quota maxRunningSandboxes (20).
  const raised = await h.request("PATCH", `/v1/teams/${team.teamId}`, {
    key: h.adminKey,
    json: { quotas: { maxRunningSandboxes: 100, maxVcpus: 100 } },
  });
  expect(raised.status).toBe(200);
  const agent = await startScriptedAgent();
  await registerHost(h, agent);
  return { h, agent, key, ...(pg ? { pg } : {}) };
}

async function stopStack(stack: Stack | undefined): Promise<void> {
  await stack?.agent.stop();
  await stack?.h.close();
  await stack?.pg?.stop();
}

async function raceSweepsAgainstTheApi({ h, agent, key }: Stack): Promise<void> {
  const createSandbox = async (): Promise<string> => {
    const res = await h.request("POST", "/v1/sandboxes", { key, json: { template: "minimal", timeoutSec: 600 } });
    expect(res.status).toBe(201);
    return ((await res.json()) as { id: string }).id;
  };
  const ids = await Promise.all(Array.from({ length: 24 }, createSandbox));
  // The agent answers pause and destroy only after it changed the sandbox, as a real one does, so
  // sweeps see the host's new state while the API still waits for its answer.
  agent.actionDelayMs = 800;
  const toPause = ids.slice(0, 8);
  const toDelete = ids.slice(8, 16);
  const untouched = ids.slice(16);

  let sweeping = true;
  let sweeps = 0;
  const sweeper = (async () => {
    while (sweeping) {
      const s = await runReconcileSweep(h.services(), { orphanGraceMs: 0, hostTimeoutMs: 5_000 });
      if (s.ran) sweeps++;
    }
  })();

  const created: string[] = [];
  // The API calls start one after another, 150 ms apart, so their windows overlap many sweeps.
  const stagger = (i: number) => new Promise((r) => setTimeout(r, i * 150));
  const results = await Promise.all([
    ...toPause.map(async (id, i) => {
      await stagger(2 * i);
      return h.request("POST", `/v1/sandboxes/${id}/pause`, { key });
    }),
    ...toDelete.map(async (id, i) => {
      await stagger(2 * i + 1);
      return h.request("DELETE", `/v1/sandboxes/${id}`, { key });
    }),
    ...Array.from({ length: 6 }, async (_, i) => {
      await stagger(3 * i);
      const id = await createSandbox();
      created.push(id);
      return new Response(null, { status: 200 });
    }),
  ]);
  // Pause can meet a sweep-held row only as a version conflict; it never fails otherwise.
  for (const r of results) expect([200, 204]).toContain(r.status);
  await new Promise((r) => setTimeout(r, 300));
  sweeping = false;
  await sweeper;
  await runReconcileSweep(h.services(), { orphanGraceMs: 0 });
  expect(sweeps).toBeGreaterThan(1);

  const rows = await h.database.db
    .select()
    .from(sandboxes)
    .where(inArray(sandboxes.id, [...ids, ...created]));
  const byId = new Map(rows.map((r) => [r.id, r]));
  for (const id of toPause) {
    expect(byId.get(id)?.state).toBe("paused");
    expect(agent.sandboxes.get(id)?.state).toBe(SandboxState.PAUSED);
  }
  for (const id of toDelete) {
    const r = byId.get(id);
    expect(r?.state).toBe("stopped");
    // The API destroys on the host first, then records it; a sweep in between records the same
    // outcome first (reason lost). Either way the sandbox is stopped and gone.
    expect(["killed", "lost"]).toContain(r?.stopReason);
    expect(agent.sandboxes.has(id)).toBe(false);
  }
  for (const id of [...untouched, ...created]) {
    expect(byId.get(id)?.state).toBe("running");
    expect(agent.sandboxes.get(id)?.state).toBe(SandboxState.RUNNING);
  }

  // No resurrection: once a sandbox's history says stopped, nothing later moves it anywhere else.
  const events = await h.database.db
    .select()
    .from(sandboxEvents)
    .where(inArray(sandboxEvents.sandboxId, [...ids, ...created]))
    .orderBy(asc(sandboxEvents.id));
  // The only thing a sweep may have done is win a delete's race (host already destroyed, row not
  // yet updated); it never touched a sandbox being paused or created, nor one left alone.
  for (const e of events.filter((e) => e.actor === "reconcile")) {
    expect(toDelete).toContain(e.sandboxId);
    expect([e.fromState, e.toState]).toEqual(["running", "stopped"]);
  }
  const stoppedAlready = new Set<string>();
  for (const e of events) {
    if (stoppedAlready.has(e.sandboxId)) expect(e.toState).toBe("stopped");
    if (e.toState === "stopped") stoppedAlready.add(e.sandboxId);
  }
  // Every row's version equals the number of state changes recorded for it (no silent writes).
  for (const r of rows) {
    const changes = events.filter((e) => e.sandboxId === r.id && e.type !== "created");
    expect(r.version).toBe(changes.length);
  }
  const [paused] = await h.database.db
    .select()
    .from(sandboxes)
    .where(eq(sandboxes.id, toPause[0] ?? ""));
  expect(paused?.endAt).toBeNull();
}

describe.each(["pglite", "postgres"] as const)("reconcile sweeps racing the API on %s", (database) => {
  let stack: Stack | undefined;
  beforeAll(async () => {
    stack = await startStack(database);
  });
  afterAll(async () => {
    await stopStack(stack);
  });

  it("loses no API update and resurrects no sandbox", async () => {
    if (!stack) throw new Error("stack not started");
    await raceSweepsAgainstTheApi(stack);
  });
});
