import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addFakeHost, createEdgeHarness, type EdgeHarness, type FakeAgent } from "../../../test/helpers/edge-app.js";
import { teamWithQuotas } from "../../../test/helpers/edge-seed.js";
import { defaultTeamQuotas } from "./quotas.js";

// One PGlite for the file; every test makes its own team.
let h: EdgeHarness;
let agent: FakeAgent;

beforeAll(async () => {
  h = await createEdgeHarness();
  ({ agent } = await addFakeHost(h));
}, 60_000);

afterAll(async () => {
  await h?.close();
});

interface ErrorJson {
  error: { code: string; message: string; requestId: string; details?: Record<string, unknown> };
}

async function expectError(res: Response, status: number, code: string): Promise<ErrorJson> {
  const body = (await res.json()) as ErrorJson;
  expect({ status: res.status, code: body.error?.code }).toEqual({ status, code });
  expect(body.error.requestId).toBe(res.headers.get("x-request-id"));
  return body;
}

async function quotaError(res: Response, quota: string, limit: number, used: number): Promise<ErrorJson> {
  const body = await expectError(res, 429, "QUOTA_EXCEEDED");
  expect(body.error.details).toEqual({ quota, limit, used });
  expect(body.error.message).toContain(`team quota ${quota} is ${limit}`);
  return body;
}

/** A new team with the given quota overrides. */
const teamWith = (quotas: Record<string, unknown>) => teamWithQuotas(h, quotas);

const create = (key: string, body: Record<string, unknown> = {}) =>
  h.request("POST", "/v1/sandboxes", { key, json: body });

async function createdId(res: Response): Promise<string> {
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

describe("team settings", () => {
  it("a new team has the defaults and holds nothing", async () => {
    const team = await h.newTeam();
    const res = await h.request("GET", "/v1/teams/me", { key: team.key });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      id: team.teamId,
      minIsolation: null,
      quotas: defaultTeamQuotas,
      quotaOverrides: {},
      usage: { runningSandboxes: 0, vcpus: 0, memoryMb: 0, pausedSandboxes: 0, pausedDiskMb: 0, apiKeys: 1 },
    });
    expect(defaultTeamQuotas.allowNoTimeout).toBe(false);
  });

  it("only an admin changes them; null resets one to the default; unknown limits are refused", async () => {
    const team = await h.newTeam();
    await expectError(
      await h.request("PATCH", `/v1/teams/${team.teamId}`, {
        key: team.key,
        json: { quotas: { maxRunningSandboxes: 1000 } },
      }),
      403,
      "FORBIDDEN",
    );
    const set = await h.request("PATCH", `/v1/teams/${team.teamId}`, {
      key: h.adminKey,
      json: { quotas: { maxRunningSandboxes: 3, maxVcpus: 6 } },
    });
    expect(await set.json()).toMatchObject({
      quotas: { maxRunningSandboxes: 3, maxVcpus: 6, maxMemoryMb: defaultTeamQuotas.maxMemoryMb },
      quotaOverrides: { maxRunningSandboxes: 3, maxVcpus: 6 },
    });
    const reset = await h.request("PATCH", `/v1/teams/${team.teamId}`, {
      key: h.adminKey,
      json: { quotas: { maxVcpus: null } },
    });
    expect(await reset.json()).toMatchObject({
      quotas: { maxRunningSandboxes: 3, maxVcpus: defaultTeamQuotas.maxVcpus },
      quotaOverrides: { maxRunningSandboxes: 3 },
    });
    await expectError(
      await h.request("PATCH", `/v1/teams/${team.teamId}`, { key: h.adminKey, json: { quotas: { maxGpus: 1 } } }),
      400,
      "BAD_REQUEST",
    );
    await expectError(
      await h.request("PATCH", `/v1/teams/${team.teamId}`, {
        key: h.adminKey,
        json: { quotas: { maxRunningSandboxes: -1 } },
      }),
      400,
      "BAD_REQUEST",
    );
    await expectError(
      await h.request("PATCH", "/v1/teams/team_nope", { key: h.adminKey, json: { quotas: {} } }),
      404,
      "NOT_FOUND",
    );
  });
});

describe("running quotas", () => {
  it("limits sandboxes running at once; a deleted one frees its place", async () => {
    const team = await teamWith({ maxRunningSandboxes: 2 });
    const first = await createdId(await create(team.key));
    await createdId(await create(team.key));
    const calls = agent.calls.length;
    await quotaError(await create(team.key), "maxRunningSandboxes", 2, 2);
    // Refused before the agent is called.
    expect(agent.calls.slice(calls).filter((c) => c.startsWith("createSandbox"))).toEqual([]);
    expect((await h.request("DELETE", `/v1/sandboxes/${first}`, { key: team.key })).status).toBe(204);
    await createdId(await create(team.key));
  });

  it("limits total vCPUs and memory", async () => {
    const team = await teamWith({ maxVcpus: 3, maxMemoryMb: 1024 });
    await createdId(await create(team.key, { vcpus: 2, memoryMb: 512 }));
    await quotaError(await create(team.key, { vcpus: 2, memoryMb: 256 }), "maxVcpus", 3, 2);
    await quotaError(await create(team.key, { vcpus: 1, memoryMb: 1024 }), "maxMemoryMb", 1024, 512);
    await createdId(await create(team.key, { vcpus: 1, memoryMb: 512 }));
    const usage = await (await h.request("GET", "/v1/teams/me", { key: team.key })).json();
    expect(usage).toMatchObject({ usage: { runningSandboxes: 2, vcpus: 3, memoryMb: 1024 } });
  });

  it("holds on the E2B create route, in E2B's error shape", async () => {
    const team = await teamWith({ maxRunningSandboxes: 1 });
    expect((await h.request("POST", "/v2/sandboxes", { key: team.key, json: { templateID: "base" } })).status).toBe(
      201,
    );
    const refused = await h.request("POST", "/v2/sandboxes", { key: team.key, json: { templateID: "base" } });
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { code: number; message: string }).code).toBe(429);
  });

  it("20 concurrent creates against a quota of 5 admit exactly 5", async () => {
    const team = await teamWith({ maxRunningSandboxes: 5 });
    const answers = await Promise.all(Array.from({ length: 20 }, () => create(team.key)));
    const statuses = answers.map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(5);
    expect(statuses.filter((s) => s === 429)).toHaveLength(15);
  });
});

describe("timeouts", () => {
  it("refuses 'never' unless the team is allowed it, and anything over maxTimeoutSec", async () => {
    const team = await h.newTeam();
    const never = await expectError(await create(team.key, { timeoutSec: 0 }), 400, "BAD_REQUEST");
    expect(never.error.message).toContain("without a timeout");
    expect(never.error.details).toMatchObject({ quota: "allowNoTimeout" });
    const long = await expectError(
      await create(team.key, { timeoutSec: defaultTeamQuotas.maxTimeoutSec + 1 }),
      400,
      "BAD_REQUEST",
    );
    expect(long.error.message).toContain(`limit of ${defaultTeamQuotas.maxTimeoutSec} s (quota maxTimeoutSec)`);
    // The same limits hold when the timeout is changed later, and on resume.
    const id = await createdId(await create(team.key, { timeoutSec: 60 }));
    await expectError(
      await h.request("POST", `/v1/sandboxes/${id}/timeout`, { key: team.key, json: { timeoutSec: 0 } }),
      400,
      "BAD_REQUEST",
    );
    expect((await h.request("POST", `/v1/sandboxes/${id}/pause`, { key: team.key })).status).toBe(200);
    await expectError(
      await h.request("POST", `/v1/sandboxes/${id}/resume`, {
        key: team.key,
        json: { timeoutSec: defaultTeamQuotas.maxTimeoutSec + 1 },
      }),
      400,
      "BAD_REQUEST",
    );
    // The E2B surface goes through the same check.
    const e2b = await h.request("POST", `/sandboxes/${id}/timeout`, {
      key: team.key,
      json: { timeout: defaultTeamQuotas.maxTimeoutSec + 1 },
    });
    expect(e2b.status).toBe(400);
    expect(((await e2b.json()) as { message: string }).message).toContain("quota maxTimeoutSec");
  });

  it("allows 'never' and longer timeouts once an admin allows them", async () => {
    const team = await teamWith({ allowNoTimeout: true, maxTimeoutSec: 7 * 86_400 });
    const res = await create(team.key, { timeoutSec: 0 });
    expect(await res.json()).toMatchObject({ timeoutSec: 0, endAt: null });
    expect((await create(team.key, { timeoutSec: 3 * 86_400 })).status).toBe(201);
  });
});

describe("paused quotas", () => {
  it("limits paused sandboxes", async () => {
    const team = await teamWith({ maxPausedSandboxes: 1 });
    const a = await createdId(await create(team.key));
    const b = await createdId(await create(team.key));
    expect((await h.request("POST", `/v1/sandboxes/${a}/pause`, { key: team.key })).status).toBe(200);
    await quotaError(
      await h.request("POST", `/v1/sandboxes/${b}/pause`, { key: team.key }),
      "maxPausedSandboxes",
      1,
      1,
    );
    // The refused one is still running.
    expect(await (await h.request("GET", `/v1/sandboxes/${b}`, { key: team.key })).json()).toMatchObject({
      state: "running",
    });
  });

  it("limits the disk paused sandboxes hold, from the snapshot sizes the agent reports", async () => {
    const team = await teamWith({ maxPausedDiskMb: 3 });
    const ids = [await createdId(await create(team.key)), await createdId(await create(team.key))];
    agent.snapshotBytes = 5 * 1024 * 1024;
    try {
      expect((await h.request("POST", `/v1/sandboxes/${ids[0]}/pause`, { key: team.key })).status).toBe(200);
      const usage = await (await h.request("GET", "/v1/teams/me", { key: team.key })).json();
      expect(usage).toMatchObject({ usage: { pausedSandboxes: 1, pausedDiskMb: 5 } });
      await quotaError(
        await h.request("POST", `/v1/sandboxes/${ids[1]}/pause`, { key: team.key }),
        "maxPausedDiskMb",
        3,
        5,
      );
      // Resuming gives the disk back.
      expect((await h.request("POST", `/v1/sandboxes/${ids[0]}/resume`, { key: team.key, json: {} })).status).toBe(200);
      expect((await h.request("POST", `/v1/sandboxes/${ids[1]}/pause`, { key: team.key })).status).toBe(200);
    } finally {
      agent.snapshotBytes = 0;
    }
  });

  it("a resume counts against the running quota", async () => {
    const team = await teamWith({ maxRunningSandboxes: 1 });
    const a = await createdId(await create(team.key));
    expect((await h.request("POST", `/v1/sandboxes/${a}/pause`, { key: team.key })).status).toBe(200);
    const b = await createdId(await create(team.key));
    await quotaError(
      await h.request("POST", `/v1/sandboxes/${a}/resume`, { key: team.key, json: {} }),
      "maxRunningSandboxes",
      1,
      1,
    );
    expect(await (await h.request("GET", `/v1/sandboxes/${a}`, { key: team.key })).json()).toMatchObject({
      state: "paused",
    });
    expect((await h.request("DELETE", `/v1/sandboxes/${b}`, { key: team.key })).status).toBe(204);
    expect((await h.request("POST", `/v1/sandboxes/${a}/resume`, { key: team.key, json: {} })).status).toBe(200);
  });
});

describe("keys per team", () => {
  it("limits live keys; a revoked key frees its place", async () => {
    const team = await teamWith({ maxApiKeys: 2 });
    const second = await h.request("POST", "/v1/api-keys", { key: team.key, json: { name: "two" } });
    expect(second.status).toBe(201);
    await quotaError(
      await h.request("POST", "/v1/api-keys", { key: team.key, json: { name: "three" } }),
      "maxApiKeys",
      2,
      2,
    );
    // An admin minting keys into the team meets the same limit.
    await quotaError(
      await h.request("POST", "/v1/api-keys", { key: h.adminKey, json: { name: "x", teamId: team.teamId } }),
      "maxApiKeys",
      2,
      2,
    );
    const { id } = (await second.json()) as { id: string };
    expect((await h.request("DELETE", `/v1/api-keys/${id}`, { key: team.key })).status).toBe(200);
    expect((await h.request("POST", "/v1/api-keys", { key: team.key, json: { name: "three" } })).status).toBe(201);
  });
});
