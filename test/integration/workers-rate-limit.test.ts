import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorkersStack, type WorkersStack } from "../helpers/workers-stack.js";

/**
 * The per-key rate limit on the real Workers runtime (workerd via wrangler, Neon serverless driver,
 * a Pool per request) and on a Node edge (node-postgres), both over one PostgreSQL: the bucket is a
 * database row, so a key's requests count against one limit whichever runtime serves them.
 */

// A refill too slow to matter during the test (one token per 1000 s), so counts are exact.
const limit = { perSec: 0.001, burst: 3 };

let stack: WorkersStack | undefined;

beforeAll(async () => {
  stack = await startWorkersStack({
    nodeEdge: { rateLimit: limit },
    bindings: { WRENN_RATE_LIMIT_PER_SEC: String(limit.perSec), WRENN_RATE_LIMIT_BURST: String(limit.burst) },
  });
}, 120_000);

afterAll(async () => {
  await stack?.close();
});

function onWorker(key: string, method: string, path: string, body?: unknown) {
  if (!stack) throw new Error("worker not started");
  return stack.call(key, method, path, body);
}

function adminKey(): string {
  if (!stack) throw new Error("worker not started");
  return stack.adminKey;
}

async function onNode(key: string, path: string) {
  const node = stack?.node;
  if (!node) throw new Error("node edge not started");
  const res = await node.request("GET", path, { key });
  await res.text();
  return { status: res.status, retryAfter: res.headers.get("retry-after") };
}

describe("rate limit on Workers and Node over one database", () => {
  it("a key's requests through a Worker and a Node edge share one bucket; the Worker answers 429 with Retry-After", async () => {
    const created = await onWorker(adminKey(), "POST", "/v1/api-keys", { name: "limited", newTeamName: "limited" });
    expect(created.status).toBe(201);
    const secret = (created.json as { secret: string }).secret;

    const statuses: number[] = [];
    for (let i = 0; i < limit.burst + 3; i++) {
      statuses.push(
        i % 2 === 0
          ? (await onWorker(secret, "GET", "/v1/sandboxes")).status
          : (await onNode(secret, "/v1/sandboxes")).status,
      );
    }
    // Three in all across both runtimes, then refused on both.
    expect(statuses).toEqual([200, 200, 200, 429, 429, 429]);

    const refused = await onWorker(secret, "GET", "/v1/sandboxes");
    expect(refused.status).toBe(429);
    expect(Number(refused.retryAfter)).toBeGreaterThanOrEqual(1);
    expect(refused.json).toMatchObject({ error: { code: "RATE_LIMITED", requestId: expect.any(String) } });
    const e2b = await onWorker(secret, "GET", "/v2/sandboxes");
    expect(e2b.status).toBe(429);
    expect(e2b.json).toMatchObject({ code: 429 });

    // Health is not limited; the admin key is limited only by its own rate.
    expect((await onWorker(secret, "GET", "/health")).status).toBe(200);
    expect((await onWorker(adminKey(), "GET", "/v1/sandboxes")).status).toBe(200);
  }, 120_000);

  it("a key revoked through the Worker is refused by the Node edge that cached it", async () => {
    const created = await onWorker(adminKey(), "POST", "/v1/api-keys", { name: "revoked", newTeamName: "revoked" });
    const { secret, id } = created.json as { secret: string; id: string };
    expect((await onNode(secret, "/v1/sandboxes")).status).toBe(200);
    expect((await onWorker(adminKey(), "DELETE", `/v1/api-keys/${id}`)).status).toBe(200);
    expect((await onNode(secret, "/v1/sandboxes")).status).toBe(401);
  }, 60_000);
});
