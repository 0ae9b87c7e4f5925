import { and, eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { activeSandboxStates, sandboxes } from "../../edge/db/schema/index.js";
import { createEdgeHarness, type EdgeHarness } from "../helpers/edge-app.js";
import { registerHost, teamWithQuotas } from "../helpers/edge-seed.js";
import { type PostgresServer, startPostgres } from "../helpers/postgres.js";
import { type ScriptedAgent, startScriptedAgent } from "../helpers/reconcile-scripted-agent.js";

/**
 * Team quotas under real concurrency: a PostgreSQL server (the edge's statements run on up to 10
 * pooled connections at once, as on a busy Node edge or across several Workers) and an agent over
 * real HTTP. Every admission locks the team row, so the count-then-insert of concurrent requests
 * cannot interleave; without the lock these overshoot.
 */
let pg: PostgresServer | undefined;
let h: EdgeHarness;
let agent: ScriptedAgent;

beforeAll(async () => {
  pg = await startPostgres();
  h = await createEdgeHarness({ realAgents: true, databaseUrl: pg.url });
  agent = await startScriptedAgent();
  await registerHost(h, agent);
}, 120_000);

afterAll(async () => {
  await agent?.stop();
  await h?.close();
  await pg?.stop();
});

const teamWith = (quotas: Record<string, unknown>) => teamWithQuotas(h, quotas);

function tally(statuses: number[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const s of statuses) out[s] = (out[s] ?? 0) + 1;
  return out;
}

describe("quotas on PostgreSQL", () => {
  it("50 concurrent creates against maxRunningSandboxes 10 admit exactly 10", async () => {
    const team = await teamWith({ maxRunningSandboxes: 10 });
    const started = performance.now();
    const answers = await Promise.all(
      Array.from({ length: 50 }, () =>
        h.request("POST", "/v1/sandboxes", { key: team.key, json: { vcpus: 1, memoryMb: 256 } }),
      ),
    );
    const elapsedMs = Math.round(performance.now() - started);
    const statuses = answers.map((r) => r.status);
    expect(tally(statuses)).toEqual({ 201: 10, 429: 40 });
    const refused = (await answers[statuses.indexOf(429)]?.json()) as { error: { code: string; details: unknown } };
    expect(refused.error).toMatchObject({
      code: "QUOTA_EXCEEDED",
      details: { quota: "maxRunningSandboxes", limit: 10, used: 10 },
    });
    // The database holds 10, and only those 10 reached the agent.
    const rows = await h.database.db
      .select({ id: sandboxes.id })
      .from(sandboxes)
      .where(and(eq(sandboxes.teamId, team.teamId), inArray(sandboxes.state, [...activeSandboxStates])));
    expect(rows).toHaveLength(10);
    const onAgent = [...agent.sandboxes.keys()].filter((id) => rows.some((r) => r.id === id));
    expect(onAgent).toHaveLength(10);
    expect(agent.calls.filter((c) => c.startsWith("createSandbox")).length).toBeGreaterThanOrEqual(10);
    console.info(`50 concurrent creates vs quota 10 on PostgreSQL: ${elapsedMs} ms`);
  }, 60_000);

  it("concurrent vCPU demands never overshoot maxVcpus", async () => {
    const team = await teamWith({ maxVcpus: 7 });
    const answers = await Promise.all(
      Array.from({ length: 20 }, () =>
        h.request("POST", "/v1/sandboxes", { key: team.key, json: { vcpus: 2, memoryMb: 256 } }),
      ),
    );
    expect(tally(answers.map((r) => r.status))).toEqual({ 201: 3, 429: 17 });
  }, 60_000);

  it("30 concurrent key creations against maxApiKeys 5 leave exactly 5 keys", async () => {
    const team = await teamWith({ maxApiKeys: 5 });
    const answers = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        h.request("POST", "/v1/api-keys", { key: team.key, json: { name: `k${i}` } }),
      ),
    );
    // The team's first key is one of the 5.
    expect(tally(answers.map((r) => r.status))).toEqual({ 201: 4, 429: 26 });
    const usage = (await (await h.request("GET", "/v1/teams/me", { key: team.key })).json()) as {
      usage: { apiKeys: number };
    };
    expect(usage.usage.apiKeys).toBe(5);
  }, 60_000);

  it("10 concurrent pauses against maxPausedSandboxes 3 pause exactly 3", async () => {
    const team = await teamWith({ maxPausedSandboxes: 3 });
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const res = await h.request("POST", "/v1/sandboxes", { key: team.key, json: { memoryMb: 256 } });
      expect(res.status).toBe(201);
      ids.push(((await res.json()) as { id: string }).id);
    }
    const answers = await Promise.all(
      ids.map((id) => h.request("POST", `/v1/sandboxes/${id}/pause`, { key: team.key })),
    );
    expect(tally(answers.map((r) => r.status))).toEqual({ 200: 3, 429: 7 });
    const paused = await h.database.db
      .select({ id: sandboxes.id })
      .from(sandboxes)
      .where(and(eq(sandboxes.teamId, team.teamId), eq(sandboxes.state, "paused")));
    expect(paused).toHaveLength(3);
  }, 60_000);
});
