import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unstable_startWorker } from "wrangler";
import type { DatabaseHandle } from "../../edge/db/client.js";
import { openNodeDatabase } from "../../edge/node/database.js";
import { type PostgresServer, startPostgres } from "../helpers/postgres.js";
import { type ScriptedAgent, startScriptedAgent } from "../helpers/reconcile-scripted-agent.js";
import { startWsProxy, type WsProxy } from "../helpers/wsproxy.js";

/**
 * Team quotas and isolation in the real Workers runtime (workerd via wrangler) on PostgreSQL through
 * the Neon serverless driver: every request opens its own Pool, so concurrent creates really run on
 * separate connections, as on many Worker isolates, and meet only at the team row lock.
 */

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const adminKey = `wrn_workers_admin_${randomBytes(16).toString("hex")}`;

type Worker = Awaited<ReturnType<typeof unstable_startWorker>>;

let pg: PostgresServer | undefined;
let proxy: WsProxy | undefined;
let worker: Worker | undefined;
let database: DatabaseHandle | undefined;
let agent: ScriptedAgent | undefined;

beforeAll(async () => {
  pg = await startPostgres();
  database = await openNodeDatabase({ databaseUrl: pg.url });
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
  agent = await startScriptedAgent();
}, 120_000);

afterAll(async () => {
  await agent?.stop();
  await worker?.dispose();
  await proxy?.close();
  await database?.close();
  await pg?.stop();
});

async function call(key: string, method: string, path: string, body?: unknown) {
  if (!worker) throw new Error("worker not started");
  const res = await worker.fetch(`http://edge.test${path}`, {
    method,
    headers: { "x-api-key": key, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, json: (text ? JSON.parse(text) : null) as Record<string, unknown> };
}

describe("quotas and isolation on Workers", () => {
  it("50 concurrent creates against maxRunningSandboxes 10 admit exactly 10; a team minimum no host meets is NO_CAPACITY", async () => {
    if (!agent) throw new Error("agent not started");
    const host = await call(adminKey, "POST", "/v1/hosts", { address: agent.url, token: agent.token });
    expect(host.status).toBe(201);
    expect(host.json).toMatchObject({ runtime: "namespace", isolation: "namespace" });
    const key = await call(adminKey, "POST", "/v1/api-keys", { name: "quota", newTeamName: "quota-team" });
    expect(key.status).toBe(201);
    const { secret, teamId } = key.json as { secret: string; teamId: string };
    const set = await call(adminKey, "PATCH", `/v1/teams/${teamId}`, { quotas: { maxRunningSandboxes: 10 } });
    expect(set.status).toBe(200);

    const answers = await Promise.all(
      Array.from({ length: 50 }, () => call(secret, "POST", "/v1/sandboxes", { memoryMb: 256 })),
    );
    const tally: Record<number, number> = {};
    for (const a of answers) tally[a.status] = (tally[a.status] ?? 0) + 1;
    expect(tally).toEqual({ 201: 10, 429: 40 });
    const team = await call(secret, "GET", "/v1/teams/me");
    expect(team.json).toMatchObject({ usage: { runningSandboxes: 10 } });

    await call(adminKey, "PATCH", `/v1/teams/${teamId}`, {
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
