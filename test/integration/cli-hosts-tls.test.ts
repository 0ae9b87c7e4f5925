import { createHash, X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostsCommand } from "../../cli/commands/hosts.js";
import { hosts } from "../../edge/db/schema/index.js";
import { parseEnv } from "../../edge/env.js";
import { noopLogger } from "../../edge/logger.js";
import { openNodeDatabase } from "../../edge/node/database.js";
import { type NodeEdge, startNodeEdge } from "../../edge/node.js";
import { runCli } from "../helpers/cli-run.js";
import { FakeAgent } from "../helpers/edge-app.js";
import { selfSignedCert } from "../helpers/tls.js";

/**
 * `wrenn hosts register --tls-pin / --ca-file` against the real Node edge (PGlite on disk, the
 * verifying agent fetch). The agent is an https server on loopback serving the in-memory fake's
 * Connect routes (a double at the protocol boundary) with certificates openssl makes here; swapping
 * its certificate afterwards shows the stored pin is what the edge checks on every later call.
 */

const dir = mkdtempSync(join(tmpdir(), "wrenn-cli-hosts-tls-"));

function selfSigned(name: string): { cert: string; key: string; certFile: string } {
  return selfSignedCert(dir, name);
}

/** The fingerprint as `openssl x509 -fingerprint -sha256` prints it: upper case, colon-separated. */
function opensslFingerprint(certPem: string): string {
  const hex = createHash("sha256").update(new X509Certificate(certPem).raw).digest("hex");
  return (hex.toUpperCase().match(/../g) ?? []).join(":");
}

const agentCert = selfSigned("agent");
const otherCert = selfSigned("other");
const token = `agent-token-${Math.random().toString(36).slice(2)}-0123456789`;
let agentServer: Server;
let agentUrl = "";
let edge: NodeEdge | undefined;
let adminKey = "";
const dataDir = join(dir, "edge-data");

function edgeEnv() {
  const parsed = parseEnv({ WRENN_PORT: "0", WRENN_HOST: "127.0.0.1", WRENN_DATA_DIR: dataDir });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  return parsed.env;
}

/** The agent now presents `cert`; open connections are closed so the edge's next call handshakes anew. */
function present(cert: { cert: string; key: string }): void {
  agentServer.setSecureContext({ cert: cert.cert, key: cert.key });
  agentServer.closeAllConnections();
}

beforeAll(async () => {
  const fake = new FakeAgent("fake", token);
  agentServer = createServer({ cert: agentCert.cert, key: agentCert.key }, connectNodeAdapter({ routes: fake.routes }));
  await new Promise<void>((resolve) => agentServer.listen(0, "127.0.0.1", () => resolve()));
  agentUrl = `https://127.0.0.1:${(agentServer.address() as AddressInfo).port}`;
  edge = await startNodeEdge(edgeEnv(), noopLogger);
  adminKey = edge.generatedAdminKey ?? "";
  expect(adminKey).toMatch(/^e2b_[0-9a-f]+$/);
}, 60_000);

afterAll(async () => {
  await edge?.close();
  agentServer?.closeAllConnections();
  await new Promise<void>((resolve) => (agentServer ? agentServer.close(() => resolve()) : resolve()));
  rmSync(dir, { recursive: true, force: true });
});

function wrenn(args: string[]) {
  return runCli(hostsCommand, [...args, "--api-url", edge?.url ?? "", "--api-key", adminKey]);
}

async function createSandbox(): Promise<{ status: number; code?: string; message?: string }> {
  const res = await fetch(`${edge?.url}/v1/sandboxes`, {
    method: "POST",
    headers: { "x-api-key": adminKey, "content-type": "application/json" },
    body: "{}",
  });
  const body = (await res.json()) as { error?: { code: string; message: string } };
  return { status: res.status, ...(body.error ? { code: body.error.code, message: body.error.message } : {}) };
}

describe("wrenn hosts register with a TLS pin or CA", () => {
  it("a wrong pin fails before anything is stored; the right one registers and holds for later calls", async () => {
    const wrong = await wrenn([
      "register",
      agentUrl,
      "--token",
      token,
      "--tls-pin",
      opensslFingerprint(otherCert.cert),
    ]);
    expect(wrong.code).not.toBe(0);
    expect(wrong.err).toMatch(/presented a certificate with SHA-256 [0-9a-f]{64}, not the pinned/);
    expect((await wrenn(["list", "--json"])).out).toBe("[]");

    const right = await wrenn([
      "register",
      agentUrl,
      "--token",
      token,
      "--tls-pin",
      opensslFingerprint(agentCert.cert),
    ]);
    expect(right.err).toBe("");
    expect(right.code).toBe(0);
    expect(right.out).toMatch(/^host_\S+ https:\/\/127\.0\.0\.1:\d+ active .*certificate pinned\)$/);
    expect(await createSandbox()).toEqual({ status: 201 });

    // Same address, same port, another certificate: the edge refuses it on the next call.
    present(otherCert);
    try {
      const refused = await createSandbox();
      expect(refused.status).toBeGreaterThanOrEqual(500);
      expect(refused.code).toMatch(/AGENT_UNAVAILABLE|NO_CAPACITY/);
    } finally {
      present(agentCert);
    }
  });

  it("--ca-file: the agent's certificate must chain to that CA", async () => {
    const wrongCa = await wrenn(["register", agentUrl, "--token", token, "--ca-file", otherCert.certFile]);
    expect(wrongCa.code).not.toBe(0);
    const rightCa = await wrenn(["register", agentUrl, "--token", token, "--ca-file", agentCert.certFile]);
    expect(rightCa.err).toBe("");
    expect(rightCa.code).toBe(0);
    expect(rightCa.out).toMatch(/CA pinned\)$/);
  });

  it("the stored host row holds what was registered last (the CA, the pin cleared)", async () => {
    await edge?.close();
    edge = undefined;
    const database = await openNodeDatabase({ pgliteDataDir: dataDir });
    try {
      const rows = await database.db.select().from(hosts).where(eq(hosts.address, agentUrl));
      expect(rows).toHaveLength(1);
      expect(rows[0]?.tlsPin).toBeNull();
      expect(rows[0]?.caPem?.trim()).toBe(agentCert.cert.trim());
    } finally {
      await database.close();
    }
  });
});
