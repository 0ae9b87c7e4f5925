import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ScriptedAgent, startScriptedAgent } from "../helpers/reconcile-scripted-agent.js";
import { startWorkersStack, type WorkersStack } from "../helpers/workers-stack.js";

/**
 * Team quotas and isolation in the real Workers runtime (workerd via wrangler) on PostgreSQL through
 * the Neon serverless driver: every request opens its own Pool, so concurrent creates really run on
 * separate connections, as on many Worker isolates, and meet only at the team row lock.
 */

let stack: WorkersStack | undefined;
let agent: ScriptedAgent | undefined;

beforeAll(async () => {
  stack = await startWorkersStack();
  agent = await startScriptedAgent();
}, 120_000);

afterAll(async () => {
  await agent?.stop();
  await stack?.close();
});

function call(key: string, method: string, path: string, body?: unknown) {
  if (!stack) throw new Error("worker not started");
  return stack.call(key, method, path, body);
}

describe("quotas and isolation on Workers", () => {
  it("50 concurrent creates against maxRunningSandboxes 10 admit exactly 10; a team minimum no host meets is NO_CAPACITY", async () => {
    if (!agent || !stack) throw new Error("agent not started");
    const host = await call(stack.adminKey, "POST", "/v1/hosts", { address: agent.url, token: agent.token });
    expect(host.status).toBe(201);
    expect(host.json).toMatchObject({ runtime: "namespace", isolation: "namespace" });
    const key = await call(stack.adminKey, "POST", "/v1/api-keys", { name: "quota", newTeamName: "quota-team" });
    expect(key.status).toBe(201);
    const { secret, teamId } = key.json as { secret: string; teamId: string };
    const set = await call(stack.adminKey, "PATCH", `/v1/teams/${teamId}`, { quotas: { maxRunningSandboxes: 10 } });
    expect(set.status).toBe(200);

    const answers = await Promise.all(
      Array.from({ length: 50 }, () => call(secret, "POST", "/v1/sandboxes", { memoryMb: 256 })),
    );
    const tally: Record<number, number> = {};
    for (const a of answers) tally[a.status] = (tally[a.status] ?? 0) + 1;
    expect(tally).toEqual({ 201: 10, 429: 40 });
    const team = await call(secret, "GET", "/v1/teams/me");
    expect(team.json).toMatchObject({ usage: { runningSandboxes: 10 } });

    await call(stack.adminKey, "PATCH", `/v1/teams/${teamId}`, {
      minIsolation: "gvisor",
      quotas: { maxRunningSandboxes: null },
    });
    const refused = await call(secret, "POST", "/v1/sandboxes", { isolation: "namespace" });
    expect(refused.status).toBe(503);
    expect(refused.json).toMatchObject({
      error: { code: "NO_CAPACITY", message: expect.stringMatching(/^no host offers isolation 'gvisor' or stronger/) },
    });
  }, 120_000);
});
