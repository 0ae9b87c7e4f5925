import { mkdtemp, rm } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseEnv } from "../../edge/env.js";
import { noopLogger } from "../../edge/logger.js";
import { type NodeEdge, startNodeEdge } from "../../edge/node.js";
import { freePort } from "../helpers/cli-stack.js";
import { selfSignedCert } from "../helpers/tls.js";

// Sessions through the real Node entry (sockets, not app.request): the client address is the
// socket's peer — X-Forwarded-For and CF-Connecting-IP are ignored without WRENN_TRUST_PROXY — and
// the session cookie is Secure on the HTTPS listener only (docs/accounts.md).
let dir: string;
let edge: NodeEdge;
let cert: { cert: string; certFile: string };
const password = "correct horse battery staple";

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "wrenn-accounts-node-"));
  const made = selfSignedCert(dir, "edge");
  cert = made;
  const parsed = parseEnv({
    WRENN_PORT: "0",
    WRENN_HOST: "127.0.0.1",
    WRENN_DATA_DIR: join(dir, "data"),
    WRENN_RECONCILE_INTERVAL_SEC: "0",
    WRENN_WEBHOOK_INTERVAL_MS: "0",
    WRENN_TLS_CERT_FILE: made.certFile,
    WRENN_TLS_KEY_FILE: join(dir, "edge.key"),
    WRENN_TLS_PORT: String(await freePort()),
  });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  edge = await startNodeEdge(parsed.env, noopLogger);
}, 120_000);

afterAll(async () => {
  await edge?.close();
  await rm(dir, { recursive: true, force: true });
});

/** A JSON POST over the edge's HTTPS listener, trusting its self-signed certificate. */
function httpsPost(path: string, json: unknown): Promise<{ status: number; setCookie: string[] }> {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify(json);
    const req = httpsRequest(
      {
        host: "127.0.0.1",
        port: edge.tlsPort,
        path,
        method: "POST",
        ca: cert.cert,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        res.on("end", () => {
          const raw = res.headers["set-cookie"];
          resolve({ status: res.statusCode ?? 0, setCookie: raw ?? [] });
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

describe("accounts on the Node edge", () => {
  it("audits the socket's address, not headers a client wrote; the cookie is Secure over HTTPS only", async () => {
    const signup = await fetch(`${edge.url}/v1/auth/signup`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-forwarded-for": "203.0.113.1",
        "cf-connecting-ip": "203.0.113.2",
      },
      body: JSON.stringify({ email: "node@example.com", password }),
    });
    expect(signup.status).toBe(201);
    const session = signup.headers.getSetCookie().find((c) => c.startsWith("wrenn_session="));
    expect(session).toMatch(/HttpOnly/);
    expect(session).not.toMatch(/Secure/);
    const cookie = signup.headers
      .getSetCookie()
      .map((c) => c.split(";")[0])
      .join("; ");
    const audit = await fetch(`${edge.url}/v1/audit?action=user.signup`, { headers: { cookie } });
    expect(audit.status).toBe(200);
    const entries = ((await audit.json()) as { entries: Array<{ ip: string | null }> }).entries;
    expect(entries[0]?.ip).toMatch(/^(::ffff:)?127\.0\.0\.1$/);

    const overTls = await httpsPost("/v1/auth/login", { email: "node@example.com", password });
    expect(overTls.status).toBe(200);
    expect(overTls.setCookie.find((c) => c.startsWith("wrenn_session="))).toMatch(/; Secure/);
    expect(overTls.setCookie.find((c) => c.startsWith("wrenn_csrf="))).toMatch(/; Secure/);
  }, 60_000);
});
