import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { mkdtemp, readFile, rm, rmdir } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { execa } from "execa";
import { HostAgentService } from "../../proto/gen/hostagent/v1/hostagent_pb.js";

/**
 * Starts the real host agent (`node --import tsx agent/main.ts`) as a child process for integration
 * tests: random loopback port, a unique network prefix and slot range (so parallel agents never
 * collide), egress off, images read from /var/lib/wrenn (or `rootDir`), and its own state directory
 * for sandboxes, snapshots, token and log. `stop()` destroys every sandbox the agent holds, stops
 * it and removes the state directory it created.
 */

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

export interface AgentProcessOptions {
  /**
   * The runtime; default namespace. Under WRENN_TEST_RUNTIME=gvisor (the vitest project
   * "integration-gvisor") "namespace" means gvisor too, so the same suite runs on both, unless the
   * test pins the namespace runtime with `namespaceOnly` (tests of namespace-specific behaviour).
   */
  runtime?: "namespace" | "qemu" | "gvisor";
  /** Keep the namespace runtime even under WRENN_TEST_RUNTIME=gvisor. */
  namespaceOnly?: boolean;
  /** Images and kernels root (AGENT_FILES_ROOTDIR); default /var/lib/wrenn. */
  rootDir?: string;
  /** State root (sandboxes, snapshots, token, agent.log); default a fresh temp dir removed on stop. Pass a
   * previous agent's `stateDir` (with its `netPrefix` and `netCidr`) to restart it on the same state. */
  stateDir?: string;
  netPrefix?: string;
  netCidr?: string;
  /** Port to listen on; default a free random port. */
  port?: number;
  /** Listen on 0.0.0.0 instead of 127.0.0.1 (isolation tests: the agent's port must exist on the slot gateways). */
  listenAll?: boolean;
  token?: string;
  /** Serve TLS with this certificate and key (PEM files); `url` is then https://. */
  tls?: { certFile: string; keyFile: string };
  /** Extra AGENT_* variables. */
  env?: Record<string, string>;
}

export interface AgentProcess {
  /** Base URL, e.g. http://127.0.0.1:41234 */
  url: string;
  token: string;
  pid: number;
  stateDir: string;
  netPrefix: string;
  netCidr: string;
  port: number;
  /** Options that start another agent on the same state, network prefix, port and token (restart tests). */
  restartOptions: AgentProcessOptions;
  /** A Connect client for HostAgentService with the bearer token set. */
  client: Client<typeof HostAgentService>;
  /** The agent's combined stdout/stderr so far (JSON log lines). */
  log(): Promise<string>;
  /** Destroys every sandbox the agent holds, stops the agent and cleans up its state directory. */
  stop(): Promise<void>;
  /** Sends SIGKILL to the agent only: sandboxes keep running (restart-recovery tests). */
  kill9(): void;
}

/**
 * The runtime that stands in for "namespace" in this test run: WRENN_TEST_RUNTIME, so one suite runs
 * against the namespace runtime and again against gVisor (vitest project "integration-gvisor").
 */
export function suiteRuntime(): "namespace" | "gvisor" {
  const wanted = process.env.WRENN_TEST_RUNTIME;
  if (wanted === undefined || wanted === "" || wanted === "namespace") return "namespace";
  if (wanted === "gvisor") return "gvisor";
  throw new Error(`WRENN_TEST_RUNTIME must be namespace or gvisor, not "${wanted}"`);
}

/** The AGENT_RUNTIME a test agent gets (see AgentProcessOptions.runtime). */
export function testRuntime(opts: Pick<AgentProcessOptions, "runtime" | "namespaceOnly">): string {
  const runtime = opts.runtime ?? "namespace";
  return runtime === "namespace" && !opts.namespaceOnly ? suiteRuntime() : runtime;
}

function bearer(token: string): Interceptor {
  return (next) => async (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/** A HostAgentService client for an agent URL and token (HTTP/1.1, JSON-free binary Connect). */
export function agentClient(url: string, token: string, ca?: Buffer): Client<typeof HostAgentService> {
  return createClient(
    HostAgentService,
    createConnectTransport({
      baseUrl: url,
      httpVersion: "1.1",
      useBinaryFormat: true,
      interceptors: [bearer(token)],
      nodeOptions: ca === undefined ? undefined : { ca },
    }),
  );
}

/** A TCP port on loopback that nothing listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Three distinct free ports for the agent's egress proxy (HTTP, TLS) and resolver. */
async function egressPorts(): Promise<Record<string, string>> {
  const ports = new Set<number>();
  while (ports.size < 3) ports.add(await freePort());
  const [http, tls, dns] = [...ports].map(String);
  return { AGENT_EGRESS_HTTP_PORT: http ?? "", AGENT_EGRESS_TLS_PORT: tls ?? "", AGENT_DNS_PORT: dns ?? "" };
}

/** IPv4 networks already routed on this host, from /proc/net/route (little-endian hex). */
async function routedNetworks(): Promise<{ base: number; mask: number }[]> {
  const text = await readFile("/proc/net/route", "utf8").catch(() => "");
  const swap = (hex: string) => {
    const n = Number.parseInt(hex, 16);
    return (((n & 255) << 24) | (((n >>> 8) & 255) << 16) | (((n >>> 16) & 255) << 8) | (n >>> 24)) >>> 0;
  };
  return text
    .split("\n")
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f.length > 7)
    .map((f) => ({ base: swap(f[1] ?? "0"), mask: swap(f[7] ?? "0") }))
    .filter((r) => r.mask !== 0);
}

/** Picks a random 10.x.y.0/23 that overlaps nothing routed here (128 slots per test agent). */
export async function freeSlotRange(): Promise<string> {
  const routes = await routedNetworks();
  for (let attempt = 0; attempt < 100; attempt++) {
    const second = 128 + Math.floor(Math.random() * 120);
    const third = Math.floor(Math.random() * 128) * 2;
    const base = ((10 << 24) | (second << 16) | (third << 8)) >>> 0;
    const mask = 0xfffffe00;
    const overlaps = routes.some((r) => {
      const common = (r.mask & mask) >>> 0;
      return (r.base & common) >>> 0 === (base & common) >>> 0;
    });
    if (!overlaps) return `10.${second}.${third}.0/23`;
  }
  throw new Error("no free 10.x.y.0/23 range for a test agent");
}

function randomPrefix(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = randomBytes(4);
  return `t${Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("")}`;
}

async function healthy(url: string, ca: Buffer | undefined): Promise<boolean> {
  if (ca === undefined) {
    const res = await fetch(`${url}/health`);
    await res.arrayBuffer();
    return res.ok;
  }
  return new Promise((resolve, reject) => {
    const req = httpsRequest(`${url}/health`, { ca }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", reject);
    req.end();
  });
}

async function waitForHealth(
  url: string,
  child: ChildProcess,
  logFile: string,
  timeoutMs: number,
  ca: Buffer | undefined,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited: number | null = null;
  child.once("exit", (code) => {
    exited = code ?? -1;
  });
  while (Date.now() < deadline) {
    if (exited !== null) {
      const log = await readFile(logFile, "utf8").catch(() => "");
      throw new Error(`agent exited with ${exited} before it was healthy:\n${log.slice(-4000)}`);
    }
    try {
      if (await healthy(url, ca)) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const log = await readFile(logFile, "utf8").catch(() => "");
  throw new Error(`agent at ${url} not healthy after ${timeoutMs} ms:\n${log.slice(-4000)}`);
}

/**
 * What a stopped agent deliberately leaves for its sandboxes' sake (its host firewall table, spare
 * slots, empty cgroup parents); a test agent's are removed once it has stopped. Only names with this
 * agent's unique prefix are touched.
 */
export async function removeAgentLeftovers(prefix: string): Promise<void> {
  const { stdout: netns } = await execa("ip", ["netns", "list"], { reject: false });
  const { stdout: links } = await execa("ip", ["-o", "link", "show"], { reject: false });
  const batch = [
    ...links
      .split("\n")
      .map((l) => /^[0-9]+: ([^:@]+)/.exec(l)?.[1] ?? "")
      .filter((name) => name.startsWith(`${prefix}-`))
      .map((name) => `link del ${name}`),
    ...netns
      .split("\n")
      .map((l) => l.split(" ")[0] ?? "")
      .filter((name) => name.startsWith(`${prefix}-`))
      .map((name) => `netns del ${name}`),
  ];
  if (batch.length > 0) await execa("ip", ["-force", "-batch", "-"], { input: `${batch.join("\n")}\n`, reject: false });
  await execa("nft", ["delete", "table", "inet", `wrenn_${prefix}`], { reject: false });
  for (const controller of ["memory", "cpu", "unified", "freezer"]) {
    await rmdir(`/sys/fs/cgroup/${controller}/wrenn-${prefix}`).catch(() => {});
  }
}

export async function startAgentProcess(opts: AgentProcessOptions = {}): Promise<AgentProcess> {
  const ownStateDir = opts.stateDir === undefined;
  const stateDir = opts.stateDir ?? (await mkdtemp(join(tmpdir(), "wrenn-agent-")));
  const port = opts.port ?? (await freePort());
  const token = opts.token ?? randomBytes(24).toString("hex");
  const netPrefix = opts.netPrefix ?? randomPrefix();
  const netCidr = opts.netCidr ?? (await freeSlotRange());
  const url = `${opts.tls ? "https" : "http"}://127.0.0.1:${port}`;
  const logFile = join(stateDir, "agent.log");
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    AGENT_FILES_ROOTDIR: opts.rootDir ?? "/var/lib/wrenn",
    AGENT_STATE_DIR: stateDir,
    AGENT_LISTEN_ADDRESS: `${opts.listenAll ? "0.0.0.0" : "127.0.0.1"}:${port}`,
    // Listening on every address without TLS needs the explicit opt-in (the tests stay on loopback).
    ...(opts.listenAll && !opts.tls ? { AGENT_INSECURE_PLAINTEXT: "1" } : {}),
    AGENT_RUNTIME: testRuntime(opts),
    AGENT_TOKEN: token,
    AGENT_EGRESS: "off",
    AGENT_NET_PREFIX: netPrefix,
    AGENT_NET_CIDR: netCidr,
    // No spare slots by default, so "nothing left after destroy" is exact; benchmarks turn the pool on.
    AGENT_SLOT_POOL: "0",
    // No warm guests either (each holds a running sandbox); the warm-guest test and the benchmark turn them on.
    AGENT_WARM_SANDBOXES: "0",
    // The egress proxy and resolver bind these on 0.0.0.0 when egress is on: two test agents at once
    // (the escape battery runs several) must not share them.
    ...(await egressPorts()),
    ...(opts.tls ? { AGENT_TLS_CERT: opts.tls.certFile, AGENT_TLS_KEY: opts.tls.keyFile } : {}),
    ...opts.env,
  };
  const logFd = openSync(logFile, "a");
  const child = spawn(process.execPath, ["--import", "tsx", "agent/main.ts"], {
    cwd: repoRoot,
    env,
    stdio: ["ignore", logFd, logFd],
  });
  closeSync(logFd);
  const pid = child.pid;
  if (pid === undefined) throw new Error("could not spawn the agent");
  const ca = opts.tls ? await readFile(opts.tls.certFile) : undefined;
  const client = agentClient(url, token, ca);
  const restartOptions: AgentProcessOptions = { ...opts, stateDir, netPrefix, netCidr, port, token };
  let killed = false;
  let exited = false;
  const exitedPromise = new Promise<void>((resolve) =>
    child.once("exit", () => {
      exited = true;
      resolve();
    }),
  );

  try {
    await waitForHealth(url, child, logFile, 60_000, ca);
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }

  const stopThis = async (): Promise<void> => {
    // The test may have stopped the agent itself (SIGTERM); then there is nobody to ask.
    if (exited) return;
    let failure: unknown;
    try {
      const list = await client.listSandboxes({});
      await Promise.allSettled(list.sandboxes.map((s) => client.destroySandbox({ sandboxId: s.sandboxId })));
    } catch (err) {
      // Still stop the agent below: a test must never leave an agent running.
      failure = err;
    }
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exitedPromise;
    clearTimeout(timer);
    if (failure !== undefined) throw failure;
  };

  return {
    url,
    token,
    pid,
    stateDir,
    netPrefix,
    netCidr,
    port,
    restartOptions,
    client,
    log: () => readFile(logFile, "utf8").catch(() => ""),
    async stop() {
      if (killed) {
        // The agent was killed: a fresh one on the same state re-adopts the sandboxes, so it can destroy them.
        const again = await startAgentProcess({ ...restartOptions, stateDir });
        await again.stop();
      } else {
        try {
          await stopThis();
        } finally {
          await removeAgentLeftovers(netPrefix);
        }
      }
      if (ownStateDir) await rm(stateDir, { recursive: true, force: true });
    },
    kill9() {
      killed = true;
      child.kill("SIGKILL");
    },
  };
}
