import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unstable_startWorker } from "wrangler";
import { createEdgeHarness, type EdgeHarness } from "../helpers/edge-app.js";
import { type PostgresServer, startPostgres } from "../helpers/postgres.js";
import { startWsProxy, type WsProxy } from "../helpers/wsproxy.js";

/**
 * The per-key rate limit on the real Workers runtime (workerd via wrangler, Neon serverless driver,
 * a Pool per request) and on a Node edge (node-postgres), both over one PostgreSQL: the bucket is a
 * database row, so a key's requests count against one limit whichever runtime serves them.
 */

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const adminKey = `wrn_workers_admin_${randomBytes(16).toString("hex")}`;
// A refill too slow to matter during the test (one token per 1000 s), so counts are exact.
const limit = { perSec: 0.001, burst: 3 };

type Worker = Awaited<ReturnType<typeof unstable_startWorker>>;

let pg: PostgresServer | undefined;
let proxy: WsProxy | undefined;
let worker: Worker | undefined;
let node: EdgeHarness | undefined;

beforeAll(async () => {
  pg = await startPostgres();
  node = await createEdgeHarness({ databaseUrl: pg.url, config: { rateLimit: limit } });
  proxy = await startWsProxy([`127.0.0.1:${pg.port}`]);
  process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false";
  process.env.WRANGLER_SEND_METRICS = "false";
  worker = await unstable_startWorker({
    config: `${repoRoot}wrangler.toml`,
    build: { nodejsCompatMode: "v2" },
    bindings: {
      DATABASE_URL: { type: "plain_text", value: pg.url },
      WRENN_ENCRYPTION_KEY: { type: "plain_text", value: randomBytes(32).toString("hex") },
      WRENN_NEON_WSPROXY: { type: "plain_text", value: proxy.address },
      WRENN_ADMIN_API_KEY: { type: "plain_text", value: adminKey },
      WRENN_RATE_LIMIT_PER_SEC: { type: "plain_text", value: String(limit.perSec) },
      WRENN_RATE_LIMIT_BURST: { type: "plain_text", value: String(limit.burst) },
      WRENN_LOG_LEVEL: { type: "plain_text", value: "warn" },
    },
    dev: {
      server: { hostname: "127.0.0.1", port: 0 },
      inspector: false,
      watch: false,
      persist: false,
      logLevel: "warn",
    },
  });
  await worker.ready;
}, 120_000);

afterAll(async () => {
  await worker?.dispose();
  await proxy?.close();
  await node?.close();
  await pg?.stop();
});

async function onWorker(key: string, method: string, path: string, body?: unknown) {
  if (!worker) throw new Error("worker not started");
  const res = await worker.fetch(`http://edge.test${path}`, {
    method,
    headers: { "x-api-key": key, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return {
    status: res.status,
    retryAfter: res.headers.get("retry-after"),
    json: (text ? JSON.parse(text) : null) as Record<string, unknown>,
  };
}

async function onNode(key: string, path: string) {
  if (!node) throw new Error("node edge not started");
  const res = await node.request("GET", path, { key });
  await res.text();
  return { status: res.status, retryAfter: res.headers.get("retry-after") };
}

describe("rate limit on Workers and Node over one database", () => {
  it("a key's requests through a Worker and a Node edge share one bucket; the Worker answers 429 with Retry-After", async () => {
    const created = await onWorker(adminKey, "POST", "/v1/api-keys", { name: "limited", newTeamName: "limited" });
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
    expect((await onWorker(adminKey, "GET", "/v1/sandboxes")).status).toBe(200);
  }, 120_000);

  it("a key revoked through the Worker is refused by the Node edge that cached it", async () => {
    const created = await onWorker(adminKey, "POST", "/v1/api-keys", { name: "revoked", newTeamName: "revoked" });
    const { secret, id } = created.json as { secret: string; id: string };
    expect((await onNode(secret, "/v1/sandboxes")).status).toBe(200);
    expect((await onWorker(adminKey, "DELETE", `/v1/api-keys/${id}`)).status).toBe(200);
    expect((await onNode(secret, "/v1/sandboxes")).status).toBe(401);
  }, 60_000);
});
