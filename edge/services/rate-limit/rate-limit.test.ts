import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addFakeHost, createEdgeHarness, type EdgeHarness } from "../../../test/helpers/edge-app.js";
import { createApp } from "../../app.js";
import type { App } from "../../context.js";

// The per-key token bucket (issue 15, quotas: "a request rate per key"). The default here is
// burst 3, refilled at 1 token/s, so a test sees the limit after three requests and a token back
// within a second. Counts allow for the tokens that flow in while a (slow, shared) machine runs them.
const limit = { perSec: 1, burst: 3 };
let h: EdgeHarness;
let second: App;

interface ErrorJson {
  error?: { code?: string; message?: string; requestId?: string; details?: Record<string, unknown> };
  code?: number;
  message?: string;
}

async function json(res: Response): Promise<ErrorJson & Record<string, unknown>> {
  const text = await res.text();
  return (text ? JSON.parse(text) : {}) as ErrorJson & Record<string, unknown>;
}

function on(app: App, method: string, path: string, key?: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = {};
  if (key) headers["x-api-key"] = key;
  if (body !== undefined) headers["content-type"] = "application/json";
  return Promise.resolve(
    app.request(path, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) }),
  );
}

/**
 * Sends requests until the first 429; returns how many got through, that response, and the most
 * tokens that could have flowed in meanwhile at `perSec`.
 */
async function drain(
  app: App,
  key: string,
  perSec = limit.perSec,
  max = 50,
): Promise<{ passed: number; limited: Response; refillAllowance: number }> {
  const started = performance.now();
  for (let passed = 0; passed < max; passed++) {
    const res = await on(app, "GET", "/v1/sandboxes", key);
    if (res.status === 429) {
      return { passed, limited: res, refillAllowance: Math.ceil(((performance.now() - started) / 1000) * perSec) };
    }
    expect(res.status).toBe(200);
  }
  throw new Error(`no 429 after ${max} requests`);
}

/** Gives a key its own rate through the API (as an admin would). */
async function setRate(keyId: string, rateLimit: { perSec: number; burst: number } | null): Promise<Response> {
  const res = await on(h.app, "PATCH", `/v1/api-keys/${keyId}`, h.adminKey, { rateLimit });
  expect(res.status).toBe(200);
  return res;
}

/** Sets the key's bucket to empty as of now, so a test does not depend on how fast it ran. */
async function emptyBucket(keyId: string): Promise<void> {
  await h.database.db.execute(
    sql`update rate_limit_buckets set tokens = 0, refilled_at = now() where key_id = ${keyId}`,
  );
}

beforeAll(async () => {
  h = await createEdgeHarness({ config: { rateLimit: limit } });
  await addFakeHost(h);
  // A second edge over the same database: its own key cache and process state, one shared bucket.
  second = createApp(h.appDeps());
}, 60_000);

afterAll(async () => {
  await h?.close();
});

describe("per-key token bucket", () => {
  it("answers 429 RATE_LIMITED with Retry-After once the burst is spent, and lets the key in again after the wait", async () => {
    const team = await h.newTeam();
    const { passed, limited, refillAllowance } = await drain(h.app, team.key);
    expect(passed).toBeGreaterThanOrEqual(limit.burst);
    expect(passed).toBeLessThanOrEqual(limit.burst + refillAllowance);
    const retryAfter = Number(limited.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    const out = await json(limited);
    expect(out.error).toMatchObject({
      code: "RATE_LIMITED",
      requestId: limited.headers.get("x-request-id"),
      details: { retryAfterSec: retryAfter, perSec: limit.perSec, burst: limit.burst },
    });
    expect(out.error?.message).toContain("retry in");
    // Still limited until a token has flowed back in...
    await emptyBucket(team.keyId);
    expect((await on(h.app, "GET", "/v1/sandboxes", team.key)).status).toBe(429);
    // ...and let in after the wait the answer named.
    await new Promise((resolve) => setTimeout(resolve, retryAfter * 1000));
    expect((await on(h.app, "GET", "/v1/sandboxes", team.key)).status).toBe(200);
  });

  it("two edge apps over one database share one bucket per key", async () => {
    const team = await h.newTeam();
    // A refill too slow to matter during the test, so the count is exact.
    await setRate(team.keyId, { perSec: 0.001, burst: limit.burst });
    const apps = [h.app, second];
    const statuses: number[] = [];
    for (let i = 0; i < limit.burst + 3; i++) {
      statuses.push((await on(apps[i % 2] as App, "GET", "/v1/sandboxes", team.key)).status);
    }
    // Three in all (not three per edge), whichever edge served them.
    expect(statuses.filter((s) => s === 200)).toHaveLength(limit.burst);
    expect(statuses.slice(limit.burst)).toEqual([429, 429, 429]);
    // And another key's bucket is its own.
    const neighbour = await h.newTeam();
    expect((await on(second, "GET", "/v1/sandboxes", neighbour.key)).status).toBe(200);
  });

  it("concurrent requests through both edges take exactly the burst", async () => {
    const team = await h.newTeam();
    // A slow refill, so the count does not depend on how long 30 requests take; the key has not
    // been used, so its bucket starts full.
    await setRate(team.keyId, { perSec: 0.001, burst: 10 });
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => on(i % 2 ? second : h.app, "GET", "/v1/sandboxes", team.key)),
    );
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(10);
    expect(statuses.filter((s) => s === 429)).toHaveLength(20);
  });

  it("limits the E2B surface too, in E2B's error shape with Retry-After", async () => {
    const team = await h.newTeam();
    await drain(h.app, team.key);
    const res = await on(h.app, "GET", "/v2/sandboxes", team.key);
    expect(res.status).toBe(429);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(await json(res)).toMatchObject({ code: 429, message: expect.stringContaining("requests per second") });
  });

  it("does not limit the health and docs routes", async () => {
    const team = await h.newTeam();
    await drain(h.app, team.key);
    for (const path of ["/health", "/openapi.json", "/docs"]) {
      for (let i = 0; i < 5; i++) expect((await on(h.app, "GET", path, team.key)).status, path).toBe(200);
    }
  });

  it("takes an admin's per-key override, which only an admin may set", async () => {
    const team = await h.newTeam();
    const denied = await on(h.app, "PATCH", `/v1/api-keys/${team.keyId}`, team.key, {
      rateLimit: { perSec: 1000, burst: 1000 },
    });
    expect(denied.status).toBe(403);
    expect((await json(denied)).error?.code).toBe("FORBIDDEN");
    const fresh = await h.newTeam();
    const set = await setRate(fresh.keyId, { perSec: 0.05, burst: 6 });
    expect((await json(set)).rateLimit).toEqual({ perSec: 0.05, burst: 6 });
    // A key seen for the first time starts with a full bucket of its own size.
    const { passed, limited } = await drain(second, fresh.key, 0.05);
    expect(passed).toBe(6);
    // At 0.05 tokens/s the next token is 20 s away.
    expect(Number(limited.headers.get("retry-after"))).toBe(20);
    // Back to the default.
    const reset = await setRate(fresh.keyId, null);
    expect((await json(reset)).rateLimit).toBeNull();
  });

  it("keeps buckets in an unlogged table (no WAL per request; emptied after a crash)", async () => {
    const result = await h.database.db.execute(
      sql`select relpersistence from pg_class where relname = 'rate_limit_buckets'`,
    );
    const rows = (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows) as Array<{
      relpersistence: string;
    }>;
    expect(rows[0]?.relpersistence).toBe("u");
  });

  it("admin keys are limited only by their own override", async () => {
    for (let i = 0; i < limit.burst * 3; i++) {
      expect((await on(h.app, "GET", "/v1/sandboxes", h.adminKey)).status).toBe(200);
    }
  });

  it("an admin can create a key with its own rate", async () => {
    const created = await on(h.app, "POST", "/v1/api-keys", h.adminKey, {
      teamId: "team_default",
      rateLimit: { perSec: 1, burst: 1 },
    });
    expect(created.status).toBe(201);
    const key = (await json(created)).secret as string;
    const { passed, refillAllowance } = await drain(h.app, key, 1);
    expect(passed).toBeGreaterThanOrEqual(1);
    expect(passed).toBeLessThanOrEqual(1 + refillAllowance);
  });
});
