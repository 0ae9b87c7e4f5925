import { createHash, X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { selfSignedCert } from "../../test/helpers/tls.js";
import { agentErrorToServiceError, createAgentConnector, type HostTarget } from "../clients/agent.js";
import { agentTlsPolicy } from "../services/hosts/register.js";
import { AgentCertificateError, createPinnedAgentFetch } from "./agent-tls.js";

// A real TLS server on loopback stands in for the agent; certificates come from openssl, made here.

const dir = mkdtempSync(join(tmpdir(), "wrenn-agent-tls-"));

function selfSigned(name: string, san: string): { cert: string; key: string } {
  return selfSignedCert(dir, name, san);
}

function sha256(certPem: string): string {
  return createHash("sha256").update(new X509Certificate(certPem).raw).digest("hex");
}

let server: Server;
let url = "";
const seen: string[] = [];
const agentCert = selfSigned("agent", "IP:127.0.0.1");
const otherCert = selfSigned("other", "IP:127.0.0.1");

beforeAll(async () => {
  server = createServer({ cert: agentCert.cert, key: agentCert.key }, (req, res) => {
    seen.push(String(req.headers.authorization));
    res.end("agent says hi");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const address = server.address();
  url = `https://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

describe("pinned agent fetch (Node edge)", () => {
  const pinned = createPinnedAgentFetch();

  it("talks to an agent presenting the pinned certificate, self-signed or not", async () => {
    const res = await pinned({ certSha256: sha256(agentCert.cert) })(`${url}/health`, {
      headers: { authorization: "Bearer right-agent" },
    });
    expect(await res.text()).toBe("agent says hi");
    expect(seen).toContain("Bearer right-agent");
  });

  it("refuses any other certificate before the token is sent", async () => {
    const wrong = pinned({ certSha256: sha256(otherCert.cert) });
    await expect(wrong(`${url}/health`, { headers: { authorization: "Bearer must-not-leak" } })).rejects.toThrow(
      /presented a certificate with SHA-256 [0-9a-f]{64}, not the pinned/,
    );
    expect(seen).not.toContain("Bearer must-not-leak");
  });

  it("accepts a certificate that chains to the host's CA, and refuses one that does not", async () => {
    const ok = await pinned({ caPem: agentCert.cert })(`${url}/health`, { headers: { authorization: "Bearer ca-ok" } });
    expect(ok.status).toBe(200);
    await expect(
      pinned({ caPem: otherCert.cert })(`${url}/health`, { headers: { authorization: "Bearer ca-wrong" } }),
    ).rejects.toThrow();
    expect(seen).not.toContain("Bearer ca-wrong");
  });

  it("tells the operator which certificate was refused, through the Connect error", () => {
    const refused = new AgentCertificateError("the agent presented a certificate with SHA-256 ab, not the pinned cd");
    const mapped = agentErrorToServiceError(ConnectError.from(refused), "registering the host");
    expect(mapped).toMatchObject({
      code: "AGENT_UNAVAILABLE",
      message: "registering the host: the agent presented a certificate with SHA-256 ab, not the pinned cd",
    });
  });

  it("refuses plain http under a policy", async () => {
    await expect(pinned({ certSha256: "0".repeat(64) })("http://127.0.0.1:1/health")).rejects.toThrow(/not https/);
  });
});

describe("agent connector and TLS policies", () => {
  const host: HostTarget = { id: "host_pinned", address: "https://127.0.0.1:1", token: "t".repeat(32) };

  it("routes a pinned host through the verifying fetch, for RPCs and the proxy alike", async () => {
    const used: string[] = [];
    const connector = createAgentConnector({
      fetch: () => Promise.reject(new Error("plain fetch must not be used")),
      proxyFetch: () => Promise.reject(new Error("plain proxy fetch must not be used")),
      pinnedFetch: (policy) => (input) => {
        used.push(`${policy.certSha256}:${String(input)}`);
        return Promise.resolve(new Response("proxied"));
      },
    });
    const res = await connector.proxy({ ...host, tls: { certSha256: "ab".repeat(32) } }, "s".repeat(20), 8080, "/x", {
      method: "GET",
      requestId: "req_1",
    });
    expect(await res.text()).toBe("proxied");
    expect(used).toEqual([`${"ab".repeat(32)}:https://127.0.0.1:1/proxy/${"s".repeat(20)}/8080/x`]);
  });

  it("on a runtime that cannot pin (Workers), refuses a pinned host instead of reaching it unverified", async () => {
    const connector = createAgentConnector({ fetch: () => Promise.reject(new Error("must not be called")) });
    expect(() => connector.client({ ...host, tls: { certSha256: "ab".repeat(32) } }, "req_1")).toThrow(/cannot verify/);
    await expect(
      connector.proxy({ ...host, tls: { caPem: agentCert.cert } }, "s".repeat(20), 1, "/", {
        method: "GET",
        requestId: "r",
      }),
    ).rejects.toMatchObject({ code: "AGENT_UNAVAILABLE" });
  });
});

describe("agentTlsPolicy (registration input)", () => {
  it("normalises fingerprints and checks PEM, https only", () => {
    const colons = sha256(agentCert.cert).toUpperCase().match(/../g)?.join(":") ?? "";
    expect(agentTlsPolicy("https://h:1", { tlsPin: colons })).toEqual({ certSha256: sha256(agentCert.cert) });
    expect(agentTlsPolicy("https://h:1", { caPem: agentCert.cert })).toEqual({ caPem: `${agentCert.cert.trim()}\n` });
    expect(agentTlsPolicy("https://h:1", {})).toBeUndefined();
    expect(() => agentTlsPolicy("http://h:1", { tlsPin: colons })).toThrow(/need an https address/);
    expect(() => agentTlsPolicy("https://h:1", { tlsPin: "abc" })).toThrow(/64 hex digits/);
    expect(() => agentTlsPolicy("https://h:1", { caPem: "not a cert" })).toThrow(/PEM/);
  });
});
