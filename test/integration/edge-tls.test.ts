import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureLocalTls, type LocalTls } from "../../cli/local-ca.js";
import type { NodeEdge } from "../../edge/node.js";
import { IMAGES_ROOT, requireImage, requireRoot } from "../helpers/agent-fixtures.js";
import { type AgentProcess, freePort, startAgentProcess } from "../helpers/agent-process.js";
import { newTeamKey, sdkTestLogger, startEdgeForAgent } from "../helpers/edge-stack.js";

/**
 * Issue 17, "TLS for host-routed URLs": the edge's HTTPS listener with a certificate from `wrenn up`'s
 * local CA (cli/local-ca.ts) for `*.wrenn.test`, and the official `e2b` SDK using it the way E2B users
 * do — no E2B_SANDBOX_URL, so every envd call goes to `https://49983-<id>.<domain>`, and `getHost(port)`
 * fetched over https. The SDK runs in a child Node that trusts the CA (NODE_EXTRA_CA_CERTS) and whose
 * resolver maps `*.wrenn.test` to 127.0.0.1 (a preload that wraps dns.lookup); no public DNS is asked.
 */

const DOMAIN = "wrenn.test";
const adminKey = `wrn_tls_admin_${randomBytes(16).toString("hex")}`;
const dir = mkdtempSync(join(tmpdir(), "wrenn-edge-tls-"));

let agent: AgentProcess | undefined;
let edge: NodeEdge | undefined;
let tls: LocalTls;
let tlsPort = 0;
let teamKey = "";

/** A preload for the child: names under the test domain resolve to loopback, others as usual. */
const RESOLVER_PRELOAD = `
import dns from "node:dns";
const system = dns.lookup;
dns.lookup = (host, options, callback) => {
  if (typeof options === "function") { callback = options; options = {}; }
  if (typeof host === "string" && (host === "${DOMAIN}" || host.endsWith(".${DOMAIN}"))) {
    const all = typeof options === "object" && options !== null && options.all;
    return all ? callback(null, [{ address: "127.0.0.1", family: 4 }]) : callback(null, "127.0.0.1", 4);
  }
  return system(host, options, callback);
};
`;

/** What the child does with the SDK, as a user's script would; prints one JSON line. */
const SDK_SCRIPT = `
import { Sandbox } from "e2b";
const out = {};
const sbx = await Sandbox.create({ timeoutMs: 120000 });
try {
  out.echo = (await sbx.commands.run("echo over-tls")).stdout.trim();
  await sbx.files.write("/home/user/www/index.html", "served over https");
  out.read = await sbx.files.read("/home/user/www/index.html");
  await sbx.commands.run("python3 -m http.server 8000 --directory /home/user/www", { background: true });
  out.host = sbx.getHost(8000);
  for (let i = 0; i < 100 && out.page === undefined; i++) {
    try {
      const res = await fetch("https://" + out.host + "/index.html");
      if (res.status === 200) out.page = await res.text();
    } catch (err) {
      out.lastError = String(err.cause ?? err);
    }
    if (out.page === undefined) await new Promise((r) => setTimeout(r, 200));
  }
} finally {
  await sbx.kill();
}
console.log(JSON.stringify(out));
`;

beforeAll(async () => {
  requireRoot();
  await requireImage();
  tls = await ensureLocalTls(join(dir, "tls"), DOMAIN);
  tlsPort = await freePort();
  agent = await startAgentProcess({ runtime: "namespace", rootDir: IMAGES_ROOT });
  edge = await startEdgeForAgent(agent, {
    adminKey,
    env: {
      WRENN_RECONCILE_INTERVAL_SEC: "0",
      WRENN_TLS_CERT_FILE: tls.certFile,
      WRENN_TLS_KEY_FILE: tls.keyFile,
      WRENN_TLS_PORT: String(tlsPort),
      WRENN_SANDBOX_DOMAIN: `${DOMAIN}:${tlsPort}`,
    },
    logger: sdkTestLogger(),
  });
  teamKey = await newTeamKey(edge, adminKey, "edge-tls", `edge-tls-${randomBytes(3).toString("hex")}`);
}, 120_000);

afterAll(async () => {
  await edge?.close().catch(() => {});
  await agent?.stop().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

/** A GET over https to 127.0.0.1 with a chosen server name and Host, trusting `ca` (or the system's). */
function httpsGet(host: string, path: string, ca?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: "127.0.0.1",
        port: tlsPort,
        path,
        servername: host.split(":")[0],
        headers: { host },
        ...(ca !== undefined ? { ca } : {}),
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          body += chunk;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

describe("the edge over https with wrenn up's local CA", () => {
  it("serves the API on its TLS port with the certificate for the domain, and nothing without trusting the CA", async () => {
    expect(edge?.tlsPort).toBe(tlsPort);
    const ca = readFileSync(tls.caFile, "utf8");
    const health = await httpsGet(`api.${DOMAIN}:${tlsPort}`, "/health", ca);
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({ status: "ok" });
    // The certificate is verified for real: without the CA the handshake is refused.
    await expect(httpsGet(`api.${DOMAIN}:${tlsPort}`, "/health")).rejects.toThrow(
      /self[- ]signed|unable to (get|verify)/i,
    );
  });

  it("lets the official e2b SDK run commands, move files and reach getHost(port) over https with no sandbox URL", async () => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.E2B_SANDBOX_URL;
    delete env.E2B_DEBUG;
    Object.assign(env, {
      E2B_API_KEY: teamKey,
      E2B_DOMAIN: `${DOMAIN}:${tlsPort}`,
      E2B_API_URL: `https://api.${DOMAIN}:${tlsPort}`,
      NODE_EXTRA_CA_CERTS: tls.caFile,
    });
    const preload = `data:text/javascript,${encodeURIComponent(RESOLVER_PRELOAD)}`;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ["--import", preload, "--input-type=module", "-e", SDK_SCRIPT],
      { cwd: process.cwd(), env, timeout: 150_000 },
    );
    const out = JSON.parse(stdout.trim().split("\n").pop() ?? "{}") as Record<string, string>;
    expect(out.echo).toBe("over-tls");
    expect(out.read).toBe("served over https");
    expect(out.host).toMatch(new RegExp(`^8000-[a-z0-9]+\\.${DOMAIN.replace(".", "\\.")}:${tlsPort}$`));
    expect(out.page, out.lastError).toBe("served over https");
  }, 180_000);
});
