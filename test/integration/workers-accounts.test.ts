import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultAccountSettings } from "../../edge/services/accounts/settings.js";
import { startWorkersStack, type WorkersStack } from "../helpers/workers-stack.js";

/**
 * Accounts on the real Workers runtime (workerd via wrangler) and a Node edge over one PostgreSQL:
 * the password hash (PBKDF2-SHA256 at 600,000 iterations, chained in calls of 100,000, the most
 * workerd allows in one call) is made and checked by either runtime, and the session cookie and CSRF
 * check work the same on both (docs/accounts.md).
 */
let stack: WorkersStack | undefined;

beforeAll(async () => {
  stack = await startWorkersStack({
    nodeEdge: { accounts: { ...defaultAccountSettings, signup: "open" } },
    bindings: { WRENN_SIGNUP: "open" },
  });
}, 120_000);

afterAll(async () => {
  await stack?.close();
});

const password = "correct horse battery staple";

/** A request to the Worker with cookies; answers the status, JSON and the cookies it set. */
async function onWorker(
  method: string,
  path: string,
  options: { json?: unknown; cookies?: Map<string, string>; csrf?: boolean } = {},
) {
  if (!stack) throw new Error("worker not started");
  const headers: Record<string, string> = {};
  if (options.json !== undefined) headers["content-type"] = "application/json";
  if (options.cookies?.size) headers.cookie = [...options.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  if (options.csrf) headers["x-csrf-token"] = options.cookies?.get("wrenn_csrf") ?? "";
  const started = performance.now();
  const res = await stack.worker.fetch(`http://edge.test${path}`, {
    method,
    headers,
    ...(options.json !== undefined ? { body: JSON.stringify(options.json) } : {}),
  });
  const ms = performance.now() - started;
  const cookies = new Map<string, string>();
  for (const line of res.headers.getSetCookie()) {
    const [pair = ""] = line.split(";");
    const at = pair.indexOf("=");
    cookies.set(pair.slice(0, at), pair.slice(at + 1));
  }
  const text = await res.text();
  return { status: res.status, json: (text ? JSON.parse(text) : {}) as Record<string, unknown>, cookies, ms };
}

describe("accounts on Workers", () => {
  it("signs up on the Worker, signs in on Node and on the Worker, and a session POST needs the CSRF header", async () => {
    const signup = await onWorker("POST", "/v1/auth/signup", { json: { email: "first@example.com", password } });
    expect(signup.status, JSON.stringify(signup.json)).toBe(201);
    expect(signup.json).toMatchObject({ user: { isInstanceAdmin: true } });
    // The Worker's hash, checked by the Node edge.
    const node = stack?.node;
    if (!node) throw new Error("no node edge");
    const onNode = await node.app.request("/v1/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "first@example.com", password }),
    });
    expect(onNode.status).toBe(200);
    // A Node-made hash (the second user signs up on Node), checked by the Worker.
    const second = await node.app.request("/v1/auth/signup", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "second@example.com", password }),
    });
    expect(second.status).toBe(201);
    const secondOnWorker = await onWorker("POST", "/v1/auth/login", {
      json: { email: "second@example.com", password },
    });
    expect(secondOnWorker.status, JSON.stringify(secondOnWorker.json)).toBe(200);
    expect(secondOnWorker.json).toMatchObject({ user: { isInstanceAdmin: false } });
    const login = await onWorker("POST", "/v1/auth/login", { json: { email: "FIRST@example.com", password } });
    expect(login.status, JSON.stringify(login.json)).toBe(200);
    const cookies = login.cookies;
    expect(cookies.get("wrenn_session")).toMatch(/^[A-Za-z0-9]{43}$/);
    const forged = await onWorker("POST", "/v1/api-keys", { json: { name: "forged" }, cookies });
    expect(forged.status).toBe(403);
    const made = await onWorker("POST", "/v1/api-keys", { json: { name: "worker" }, cookies, csrf: true });
    expect(made.status, JSON.stringify(made.json)).toBe(201);
    const wrong = await onWorker("POST", "/v1/auth/login", {
      json: { email: "first@example.com", password: "wrong password!" },
    });
    expect(wrong.status).toBe(401);
    // How long a sign-in takes on workerd here (wall time, including the database), for the docs.
    console.info(`workerd sign-in: ${login.ms.toFixed(0)} ms, failed sign-in: ${wrong.ms.toFixed(0)} ms`);
  }, 120_000);
});
