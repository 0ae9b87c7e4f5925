import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addFakeHost, createEdgeHarness, type EdgeHarness } from "../../test/helpers/edge-app.js";

// The auth matrix runs over every /v1 operation in the OpenAPI document, so a route added later
// is covered without touching this file.
let h: EdgeHarness;
let owner: { key: string; teamId: string; keyId: string };
let intruder: { key: string; teamId: string; keyId: string };
let revokedKey: string;
let sandboxId: string;
let hostId: string;

interface Operation {
  method: string;
  path: string;
  operationId: string;
}

let operations: Operation[] = [];

/** A valid request body per operation, so validation passes and auth/ownership decide the answer. */
function bodyFor(operationId: string): { json?: unknown; body?: FormData } {
  switch (operationId) {
    case "createSandbox":
    case "pauseSandbox":
    case "resumeSandbox":
    case "createApiKey":
      return { json: {} };
    case "execCommand":
    case "execCommandStream":
      return { json: { cmd: "echo hi" } };
    case "setSandboxTimeout":
      return { json: { timeoutSec: 30 } };
    case "readFile":
    case "makeDirectory":
    case "removePath":
    case "listFiles":
      return { json: { path: "/home/user/x" } };
    case "writeFile": {
      const form = new FormData();
      form.set("path", "/home/user/x");
      form.set("file", new Blob(["x"]), "x");
      return { body: form };
    }
    case "registerHost":
      return { json: { address: "http://127.0.0.1:1", token: "x".repeat(20) } };
    default:
      return {};
  }
}

function concrete(op: Operation): string {
  const id = op.path.startsWith("/v1/sandboxes") ? sandboxId : op.path.startsWith("/v1/hosts") ? hostId : owner.keyId;
  return op.path.replace("{id}", id);
}

function send(op: Operation, headers: Record<string, string>): Promise<Response> {
  const { json, body } = bodyFor(op.operationId);
  return h.request(op.method.toUpperCase(), concrete(op), {
    headers,
    ...(json !== undefined ? { json } : {}),
    ...(body ? { body } : {}),
  });
}

beforeAll(async () => {
  h = await createEdgeHarness();
  ({ hostId } = await addFakeHost(h));
  owner = await h.newTeam("owner");
  intruder = await h.newTeam("intruder");
  const made = await h.request("POST", "/v1/api-keys", { key: owner.key, json: { name: "to revoke" } });
  const revoked = (await made.json()) as { id: string; secret: string };
  await h.request("DELETE", `/v1/api-keys/${revoked.id}`, { key: owner.key });
  revokedKey = revoked.secret;
  const created = await h.request("POST", "/v1/sandboxes", { key: owner.key, json: {} });
  sandboxId = ((await created.json()) as { id: string }).id;
  const doc = (await (await h.request("GET", "/openapi.json")).json()) as {
    paths: Record<string, Record<string, { operationId: string; "x-wrenn-public"?: boolean }>>;
  };
  // Sign-up, sign-in and the other account routes (x-wrenn-public) take no key: docs/accounts.md.
  operations = Object.entries(doc.paths)
    .filter(([path]) => path.startsWith("/v1/"))
    .flatMap(([path, methods]) =>
      Object.entries(methods)
        .filter(([, op]) => !op["x-wrenn-public"])
        .map(([method, op]) => ({ method, path, operationId: op.operationId })),
    );
}, 60_000);

afterAll(async () => {
  await h?.close();
});

async function expectCode(res: Response, status: number, code: string, label: string) {
  const text = await res.text();
  expect({ label, status: res.status, code: (JSON.parse(text) as { error?: { code?: string } }).error?.code }).toEqual({
    label,
    status,
    code,
  });
}

describe("auth matrix over every /v1 route", () => {
  it("found the routes", () => {
    expect(operations.length).toBeGreaterThanOrEqual(19);
  });

  it("no key → 401", async () => {
    for (const op of operations) await expectCode(await send(op, {}), 401, "UNAUTHORIZED", op.operationId);
  });

  it("unknown key (either header) → 401", async () => {
    for (const op of operations) {
      await expectCode(await send(op, { "x-api-key": "wrn_notakey" }), 401, "UNAUTHORIZED", op.operationId);
      await expectCode(await send(op, { authorization: "Bearer wrn_notakey" }), 401, "UNAUTHORIZED", op.operationId);
      await expectCode(await send(op, { authorization: "Basic abc" }), 401, "UNAUTHORIZED", op.operationId);
    }
  });

  it("revoked key → 401", async () => {
    for (const op of operations)
      await expectCode(await send(op, { "x-api-key": revokedKey }), 401, "UNAUTHORIZED", op.operationId);
  });

  it("another team's sandbox → 404 on every sandbox route; host routes → 403 for non-admins", async () => {
    for (const op of operations) {
      if (op.path.startsWith("/v1/sandboxes/{id}")) {
        await expectCode(await send(op, { "x-api-key": intruder.key }), 404, "NOT_FOUND", op.operationId);
      } else if (op.path.startsWith("/v1/hosts")) {
        await expectCode(await send(op, { "x-api-key": owner.key }), 403, "FORBIDDEN", op.operationId);
      }
    }
    // And the sandbox is untouched by all of that.
    const res = await h.request("GET", `/v1/sandboxes/${sandboxId}`, { key: owner.key });
    expect(((await res.json()) as { state: string }).state).toBe("running");
  });

  it("another team's key id → 404 on revoke", async () => {
    await expectCode(
      await h.request("DELETE", `/v1/api-keys/${owner.keyId}`, { key: intruder.key }),
      404,
      "NOT_FOUND",
      "revokeApiKey",
    );
  });

  it("lists only the caller's team", async () => {
    const mine = await h.request("GET", "/v1/sandboxes", { headers: { authorization: `Bearer ${owner.key}` } });
    expect(((await mine.json()) as { sandboxes: Array<{ id: string }> }).sandboxes.map((s) => s.id)).toEqual([
      sandboxId,
    ]);
    const theirs = await h.request("GET", "/v1/sandboxes", { key: intruder.key });
    expect(((await theirs.json()) as { sandboxes: unknown[] }).sandboxes).toEqual([]);
  });

  it("public routes need no key", async () => {
    for (const path of ["/health", "/openapi.json", "/openapi.yaml", "/docs"])
      expect((await h.request("GET", path)).status, path).toBe(200);
  });
});
