import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addFakeHost, createEdgeHarness, type EdgeHarness } from "../../../test/helpers/edge-app.js";
import { createApp } from "../../app.js";
import type { App } from "../../context.js";
import { sha256Hex } from "../crypto.js";

// Key scopes, expiry and who may mint or revoke which keys (issue 15, item 6 and "Key scopes").
let h: EdgeHarness;
let team: { key: string; teamId: string; keyId: string };
let other: { key: string; teamId: string; keyId: string };
let sandboxId: string;
let adminKeyId: string;

interface ErrorJson {
  error?: { code?: string; message?: string; requestId?: string; details?: Record<string, unknown> };
  code?: number;
  message?: string;
}

async function body(res: Response): Promise<ErrorJson & Record<string, unknown>> {
  const text = await res.text();
  return (text ? JSON.parse(text) : {}) as ErrorJson & Record<string, unknown>;
}

/** Creates a key with `json` using `key`, expecting 201; returns its id and secret. */
async function mint(key: string, json: Record<string, unknown>): Promise<{ id: string; secret: string }> {
  const res = await h.request("POST", "/v1/api-keys", { key, json });
  const out = await body(res);
  expect(res.status, JSON.stringify(out)).toBe(201);
  return { id: out.id as string, secret: out.secret as string };
}

beforeAll(async () => {
  h = await createEdgeHarness();
  await addFakeHost(h);
  team = await h.newTeam("scopes");
  other = await h.newTeam("scopes-other");
  const created = await h.request("POST", "/v1/sandboxes", { key: team.key, json: {} });
  sandboxId = ((await created.json()) as { id: string }).id;
  const keys = await body(await h.request("GET", "/v1/api-keys", { key: h.adminKey }));
  adminKeyId = (keys.apiKeys as Array<{ id: string; isAdmin: boolean }>).find((k) => k.isAdmin)?.id ?? "";
  expect(adminKeyId).toMatch(/^key_/);
}, 60_000);

afterAll(async () => {
  await h?.close();
});

describe("who may mint keys", () => {
  it("a non-admin key cannot mint admin keys, keys for other teams, or keys with their own rate", async () => {
    for (const json of [
      { isAdmin: true },
      { scopes: ["admin"] },
      { teamId: other.teamId },
      { teamId: team.teamId },
      { newTeamName: "sneaky" },
      { rateLimit: { perSec: 1000, burst: 1000 } },
    ]) {
      const res = await h.request("POST", "/v1/api-keys", { key: team.key, json });
      const out = await body(res);
      expect({ json, status: res.status, code: out.error?.code }).toEqual({ json, status: 403, code: "FORBIDDEN" });
    }
    // Nothing was created in the other team.
    const theirs = await body(await h.request("GET", "/v1/api-keys", { key: other.key }));
    expect((theirs.apiKeys as unknown[]).length).toBe(1);
  });

  it("a non-admin key grants only scopes it holds; by default its own", async () => {
    const narrow = await mint(team.key, { name: "narrow", scopes: ["sandboxes:read", "keys:write"] });
    const res = await h.request("POST", "/v1/api-keys", {
      key: narrow.secret,
      json: { scopes: ["sandboxes:read", "sandboxes:write"] },
    });
    const out = await body(res);
    expect(res.status).toBe(403);
    expect(out.error?.code).toBe("FORBIDDEN");
    expect(out.error?.message).toContain("sandboxes:write");
    const child = await h.request("POST", "/v1/api-keys", { key: narrow.secret, json: { name: "child" } });
    expect(child.status).toBe(201);
    expect((await body(child)).scopes).toEqual(["sandboxes:read", "keys:write"]);
  });

  it("an admin key mints admin keys and keys for other teams", async () => {
    const res = await h.request("POST", "/v1/api-keys", {
      key: h.adminKey,
      json: { teamId: other.teamId, scopes: ["sandboxes:read"] },
    });
    expect(res.status).toBe(201);
    expect(await body(res)).toMatchObject({ teamId: other.teamId, isAdmin: false, scopes: ["sandboxes:read"] });
    const admin = await body(await h.request("POST", "/v1/api-keys", { key: h.adminKey, json: { isAdmin: true } }));
    expect(admin.scopes).toContain("admin");
    expect((await h.request("GET", "/v1/hosts", { key: admin.secret as string })).status).toBe(200);
  });
});

describe("who may revoke keys", () => {
  it("a non-admin key in the admin's team cannot revoke the admin key", async () => {
    const insider = await mint(h.adminKey, { name: "insider", teamId: "team_default" });
    const res = await h.request("DELETE", `/v1/api-keys/${adminKeyId}`, { key: insider.secret });
    expect(res.status).toBe(403);
    expect((await body(res)).error?.code).toBe("FORBIDDEN");
    // Nor change it.
    const patch = await h.request("PATCH", `/v1/api-keys/${adminKeyId}`, {
      key: insider.secret,
      json: { expiresAt: new Date(Date.now() + 1000).toISOString() },
    });
    expect(patch.status).toBe(403);
    expect((await h.request("GET", "/v1/hosts", { key: h.adminKey })).status).toBe(200);
  });

  it("a team key cannot revoke another team's key, but revokes its own team's non-admin keys", async () => {
    const res = await h.request("DELETE", `/v1/api-keys/${other.keyId}`, { key: team.key });
    expect(res.status).toBe(404);
    expect((await h.request("GET", "/v1/sandboxes", { key: other.key })).status).toBe(200);
    const victim = await mint(team.key, { name: "victim" });
    expect((await h.request("GET", "/v1/sandboxes", { key: victim.secret })).status).toBe(200);
    const revoke = await h.request("DELETE", `/v1/api-keys/${victim.id}`, { key: team.key });
    expect(revoke.status).toBe(200);
    expect((await body(revoke)).revokedAt).toEqual(expect.any(String));
    expect((await h.request("GET", "/v1/sandboxes", { key: victim.secret })).status).toBe(401);
  });

  it("an admin key revokes any team's keys", async () => {
    const victim = await mint(h.adminKey, { teamId: other.teamId });
    expect((await h.request("DELETE", `/v1/api-keys/${victim.id}`, { key: h.adminKey })).status).toBe(200);
    expect((await h.request("GET", "/v1/sandboxes", { key: victim.secret })).status).toBe(401);
  });
});

describe("expiry", () => {
  it("an expired key gets 401 API_KEY_EXPIRED on the API and 401 on the E2B surface, cached or not", async () => {
    const expiresAt = new Date(Date.now() + 1500).toISOString();
    const key = await mint(team.key, { name: "short-lived", expiresAt });
    // Used while valid, so the key cache holds it when it expires.
    expect((await h.request("GET", "/v1/sandboxes", { key: key.secret })).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, Date.parse(expiresAt) - Date.now() + 50));
    const res = await h.request("GET", "/v1/sandboxes", { key: key.secret });
    const out = await body(res);
    expect(res.status).toBe(401);
    expect(out.error).toMatchObject({ code: "API_KEY_EXPIRED", requestId: expect.any(String) });
    expect(out.error?.message).toContain(expiresAt.slice(0, 19));
    const e2b = await h.request("GET", "/v2/sandboxes", { key: key.secret });
    expect(e2b.status).toBe(401);
  });

  it("refuses an expiry in the past, and a child key that would outlive its maker", async () => {
    const past = await h.request("POST", "/v1/api-keys", {
      key: team.key,
      json: { expiresAt: new Date(Date.now() - 1000).toISOString() },
    });
    expect(past.status).toBe(400);
    const maker = await mint(team.key, { name: "maker", expiresAt: new Date(Date.now() + 3_600_000).toISOString() });
    const longer = await h.request("POST", "/v1/api-keys", {
      key: maker.secret,
      json: { expiresAt: new Date(Date.now() + 7_200_000).toISOString() },
    });
    expect(longer.status).toBe(403);
    const inherited = await body(await h.request("POST", "/v1/api-keys", { key: maker.secret, json: {} }));
    const makerView = (
      (await body(await h.request("GET", "/v1/api-keys", { key: team.key }))).apiKeys as Array<{
        id: string;
        expiresAt: string;
      }>
    ).find((k) => k.id === maker.id);
    expect(inherited.expiresAt).toBe(makerView?.expiresAt);
  });
});

// One representative route per group, with the scope it needs.
const routes: Array<{ scope: string; method: string; path: () => string; json?: unknown; form?: boolean }> = [
  { scope: "sandboxes:read", method: "GET", path: () => "/v1/sandboxes" },
  { scope: "sandboxes:read", method: "GET", path: () => `/v1/sandboxes/${sandboxId}` },
  {
    scope: "sandboxes:write",
    method: "POST",
    path: () => `/v1/sandboxes/${sandboxId}/timeout`,
    json: { timeoutSec: 600 },
  },
  {
    scope: "sandboxes:exec",
    method: "POST",
    path: () => `/v1/sandboxes/${sandboxId}/exec`,
    json: { cmd: "echo hi" },
  },
  {
    scope: "files:read",
    method: "POST",
    path: () => `/v1/sandboxes/${sandboxId}/files/list`,
    json: { path: "/home/user" },
  },
  { scope: "files:write", method: "POST", path: () => `/v1/sandboxes/${sandboxId}/files/write`, form: true },
  { scope: "keys:read", method: "GET", path: () => "/v1/api-keys" },
  { scope: "keys:write", method: "POST", path: () => "/v1/api-keys", json: { scopes: ["keys:write"] } },
  { scope: "sandboxes:read", method: "GET", path: () => "/v2/sandboxes" },
  { scope: "sandboxes:read", method: "GET", path: () => `/sandboxes/${sandboxId}` },
  { scope: "sandboxes:write", method: "POST", path: () => `/sandboxes/${sandboxId}/timeout`, json: { timeout: 600 } },
];

function send(route: (typeof routes)[number], key: string): Promise<Response> {
  if (route.form) {
    const form = new FormData();
    form.set("path", "/home/user/scoped.txt");
    form.set("file", new Blob(["x"]), "scoped.txt");
    return h.request(route.method, route.path(), { key, body: form });
  }
  return h.request(route.method, route.path(), { key, ...(route.json !== undefined ? { json: route.json } : {}) });
}

describe("scopes on routes", () => {
  it("a key with one scope passes that scope's routes and gets 403 INSUFFICIENT_SCOPE on every other group", async () => {
    const scopes = [...new Set(routes.map((r) => r.scope))];
    for (const scope of scopes) {
      const key = await mint(team.key, { name: `only ${scope}`, scopes: [scope] });
      for (const route of routes) {
        const res = await send(route, key.secret);
        const out = await body(res);
        const label = `${scope} → ${route.method} ${route.path()}`;
        if (route.scope === scope) {
          expect(res.status, `${label}: ${JSON.stringify(out)}`).toBeLessThan(300);
        } else if (route.path().startsWith("/v1/")) {
          expect({
            label,
            status: res.status,
            code: out.error?.code,
            needs: out.error?.details?.requiredScope,
          }).toEqual({ label, status: 403, code: "INSUFFICIENT_SCOPE", needs: route.scope });
          expect(out.error?.message).toContain(route.scope);
        } else {
          // The E2B surface answers in E2B's shape.
          expect({ label, status: res.status, code: out.code }).toEqual({ label, status: 403, code: 403 });
          expect(out.message).toContain(route.scope);
        }
      }
    }
  });

  it("host routes need an admin key (403 FORBIDDEN) even with every other scope", async () => {
    const res = await h.request("GET", "/v1/hosts", { key: team.key });
    expect(res.status).toBe(403);
    expect((await body(res)).error?.code).toBe("FORBIDDEN");
  });

  it("every authenticated operation in /openapi.json names its scope (security, x-wrenn-scope, description)", async () => {
    const doc = (await (await h.request("GET", "/openapi.json")).json()) as {
      paths: Record<
        string,
        Record<string, { operationId: string; security?: unknown; "x-wrenn-scope"?: string; description?: string }>
      >;
    };
    let checked = 0;
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const op of Object.values(methods)) {
        if (!op.security) continue;
        checked++;
        const scope = op["x-wrenn-scope"];
        expect(scope, `${op.operationId} (${path}) declares no scope`).toEqual(expect.any(String));
        expect(op.security).toEqual([{ ApiKeyAuth: [scope] }, { BearerAuth: [scope] }]);
        expect(op.description).toContain(`\`${scope}\` scope`);
      }
    }
    expect(checked).toBeGreaterThanOrEqual(30);
  });
});

describe("existing keys", () => {
  it("a key stored before scopes existed (no scopes column given) keeps every non-admin power", async () => {
    const secret = `wrn_legacy_${Math.random().toString(36).slice(2)}_0123456789`;
    const keyId = `key_legacy${Math.random().toString(36).slice(2, 10)}`;
    await h.database.db.execute(
      sql`insert into api_keys (id, team_id, name, prefix, hash) values (${keyId}, ${team.teamId}, 'legacy', 'wrn_legacy', ${await sha256Hex(secret)})`,
    );
    for (const route of routes) {
      const res = await send(route, secret);
      expect(res.status, `${route.method} ${route.path()}`).toBeLessThan(300);
    }
    const listed = await body(await h.request("GET", "/v1/api-keys", { key: secret }));
    const legacy = (listed.apiKeys as Array<{ id: string; scopes: string[]; expiresAt: string | null }>).find(
      (k) => k.id === keyId,
    );
    expect(legacy?.expiresAt).toBeNull();
    expect(legacy?.scopes).toEqual([
      "sandboxes:read",
      "sandboxes:write",
      "sandboxes:exec",
      "files:read",
      "files:write",
      "keys:read",
      "keys:write",
    ]);
  });
});

describe("changes reach every edge", () => {
  let second: App;

  beforeAll(() => {
    // A second edge over the same database, with its own key cache; both limit keys (which makes
    // each request read the key row).
    const config = { ...h.config, rateLimit: { perSec: 1000, burst: 1000 } };
    second = createApp(h.appDeps(config));
  });

  const onSecond = (method: string, path: string, key: string, json?: unknown) =>
    Promise.resolve(
      second.request(path, {
        method,
        headers: { "x-api-key": key, ...(json !== undefined ? { "content-type": "application/json" } : {}) },
        ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
      }),
    );

  it("a scope narrowed through one edge is enforced by another edge that cached the key", async () => {
    const key = await mint(team.key, { name: "narrowed later" });
    expect((await onSecond("POST", `/v1/sandboxes/${sandboxId}/exec`, key.secret, { cmd: "echo a" })).status).toBe(200);
    const patch = await h.request("PATCH", `/v1/api-keys/${key.id}`, {
      key: team.key,
      json: { scopes: ["sandboxes:read"] },
    });
    expect(patch.status).toBe(200);
    const res = await onSecond("POST", `/v1/sandboxes/${sandboxId}/exec`, key.secret, { cmd: "echo a" });
    expect(res.status).toBe(403);
    expect((await body(res)).error?.code).toBe("INSUFFICIENT_SCOPE");
    expect((await onSecond("GET", "/v1/sandboxes", key.secret)).status).toBe(200);
  });

  it("a key revoked through one edge is refused by another edge that cached it, on the next request", async () => {
    const key = await mint(team.key, { name: "revoked elsewhere" });
    expect((await onSecond("GET", "/v1/sandboxes", key.secret)).status).toBe(200);
    expect((await h.request("DELETE", `/v1/api-keys/${key.id}`, { key: team.key })).status).toBe(200);
    const res = await onSecond("GET", "/v1/sandboxes", key.secret);
    expect(res.status).toBe(401);
    expect((await body(res)).error?.code).toBe("UNAUTHORIZED");
  });

  it("an expiry set through one edge is enforced by another edge that cached the key", async () => {
    const key = await mint(team.key, { name: "expired elsewhere" });
    expect((await onSecond("GET", "/v1/sandboxes", key.secret)).status).toBe(200);
    const patch = await h.request("PATCH", `/v1/api-keys/${key.id}`, {
      key: team.key,
      json: { expiresAt: new Date(Date.now() - 1000).toISOString() },
    });
    expect(patch.status).toBe(200);
    const res = await onSecond("GET", "/v1/sandboxes", key.secret);
    expect(res.status).toBe(401);
    expect((await body(res)).error?.code).toBe("API_KEY_EXPIRED");
  });
});
