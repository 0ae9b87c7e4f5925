import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { Agent, request as httpRequest } from "node:http";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { noopLogger } from "../edge/logger.js";
import { openNodeDatabase } from "../edge/node/database.js";
import { createServiceDeps, serviceContext } from "../edge/services/context.js";
import { type ReconcileSummary, runReconcileSweep } from "../edge/services/reconcile/sweep.js";
import { type AgentProcess, freePort, startAgentProcess } from "../test/helpers/agent-process.js";
import { type PostgresServer, startPostgres } from "../test/helpers/postgres.js";

/**
 * The mixed-load driver behind `npm run bench -- load` and test/security/mixed-load.test.ts: a real
 * stack (the Node edge as its own process on PostgreSQL, the host agent as its own process on gVisor by
 * default), N concurrent clients for S seconds doing creates and kills, execs, file uploads and
 * downloads and HTTP requests through the sandbox proxy, while a hostile sandbox's server answers
 * garbage (statuses 600 and 999, bytes that are not HTTP, broken chunking, huge headers, slowloris,
 * connection resets) and is hit continuously through the proxy. Everything stays on loopback and in the
 * agent's own network namespaces, with sandbox egress off.
 *
 * At the end it checks that nothing crashed (edge, agent and each long-lived sandbox's envd keep their
 * PIDs and start times) and that no row was lost (every 201 create has its row, every 204 kill ended it,
 * and after a reconcile sweep no active row lacks a runtime sandbox nor the reverse). Every process it
 * starts is stopped by PID, on failure too.
 */

const repoRoot = fileURLToPath(new URL("../", import.meta.url));

export interface MixedLoadOptions {
  /** Seconds the clients run (WRENN_LOAD_SECONDS; default 60). */
  seconds: number;
  /** Concurrent clients (WRENN_LOAD_CLIENTS; default 20). */
  clients: number;
  /** Runtime of the agent (WRENN_LOAD_RUNTIME; default gvisor, the default without KVM). */
  runtime: "gvisor" | "namespace";
  /** Sandboxes that create-and-kill churn may hold at once, across all clients (WRENN_LOAD_MAX_CHURN; default 4). */
  maxLiveChurn: number;
  /** Long-lived sandboxes that take the exec, file and proxy traffic (default 2). */
  workSandboxes: number;
  /** Progress lines (stderr by default). */
  log: (line: string) => void;
}

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, not "${raw}"`);
  return n;
}

/** Options from WRENN_LOAD_* variables over the given defaults. */
export function loadOptionsFromEnv(defaults: Partial<MixedLoadOptions> = {}): MixedLoadOptions {
  const runtime = process.env.WRENN_LOAD_RUNTIME || defaults.runtime || "gvisor";
  if (runtime !== "gvisor" && runtime !== "namespace") {
    throw new Error(`WRENN_LOAD_RUNTIME must be gvisor or namespace, not "${runtime}"`);
  }
  return {
    seconds: envInt("WRENN_LOAD_SECONDS", defaults.seconds ?? 60),
    clients: envInt("WRENN_LOAD_CLIENTS", defaults.clients ?? 20),
    runtime,
    maxLiveChurn: envInt("WRENN_LOAD_MAX_CHURN", defaults.maxLiveChurn ?? 4),
    workSandboxes: defaults.workSandboxes ?? 2,
    log: defaults.log ?? ((line) => process.stderr.write(`load: ${line}\n`)),
  };
}

/** Kinds of operation, each with its own latency figures. */
export const opKinds = [
  "create",
  "kill",
  "exec",
  "upload",
  "download",
  "proxy (E2B headers)",
  "proxy (Host)",
  "hostile proxy",
] as const;
export type OpKind = (typeof opKinds)[number];

export interface OpStats {
  /** Milliseconds of every finished attempt (successes and failures), in order. */
  latencies: number[];
  ok: number;
  /** Outcomes by label: `201`, `502 SANDBOX_BAD_RESPONSE`, `client timeout`, `transport: …`. */
  outcomes: Record<string, number>;
}

export interface MixedLoadResult {
  options: Omit<MixedLoadOptions, "log">;
  /** Seconds from the first client start until the last client finished its last operation. */
  elapsedSec: number;
  ops: Record<OpKind, OpStats>;
  /** Answers with status ≥ 500 that the operation does not allow (any on normal traffic; non-502 on hostile). */
  unexpected5xx: number;
  /** Other failures of normal traffic (4xx, transport errors, timeouts, wrong bytes), by label. */
  otherFailures: number;
  /** A few of each unexpected outcome, for the report. */
  samples: string[];
  /** What crashed (empty when nothing did). */
  crashes: string[];
  /** Rows lost, doubled or left behind (empty when the accounting holds). */
  lostRows: string[];
  accounting: {
    created: number;
    killed: number;
    rows: number;
    activeRowsAfter: number;
    runtimeSandboxesAfter: number;
    sweep?: Pick<ReconcileSummary, "ran" | "changed" | "destroyedOnHost" | "actionFailures">;
  };
  /** Hostile outcomes by path: `/600` → { "502 SANDBOX_BAD_RESPONSE": n }. */
  hostileByPath: Record<string, Record<string, number>>;
  /** The edge's stderr lines that are not JSON log lines (a raw stack trace, an `Error: aborted`). */
  edgeRawLines: string[];
  /** The edge's `error`-level log lines (every 5xx it answered is one). */
  edgeErrorLines: number;
  loadAvgBefore: number[];
  loadAvgAfter: number[];
}

/** Hostile answers, one per path; the server listens on two ports (one per routing style). */
const hostilePaths = [
  "/600",
  "/999",
  "/garbage",
  "/chunked",
  "/huge-headers",
  "/many-headers",
  "/slowloris",
  "/reset",
  "/reset-mid-body",
  "/cut",
  "/silence",
] as const;

const hostilePorts = { headers: 8600, host: 8601 } as const;
const webPort = 8000;

const hostileServer = `
import socket, struct, threading, time
def rst(c):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
def answer(c, path):
    if path == b"/600":
        c.sendall(b"HTTP/1.1 600 Weird\\r\\ncontent-length: 2\\r\\n\\r\\nhi")
    elif path == b"/999":
        c.sendall(b"HTTP/1.1 999 X\\r\\n\\r\\nabc")
    elif path == b"/garbage":
        c.sendall(b"\\x00\\xff\\xfe garbage \\x1b[31m\\r\\n\\r\\n" * 64)
    elif path == b"/chunked":
        c.sendall(b"HTTP/1.1 200 OK\\r\\ntransfer-encoding: chunked\\r\\n\\r\\n5\\r\\nhello\\r\\nzz;\\r\\nnot a chunk\\r\\n\\r\\n")
    elif path == b"/huge-headers":
        c.sendall(b"HTTP/1.1 200 OK\\r\\nx-junk: " + b"a" * 262144 + b"\\r\\ncontent-length: 2\\r\\n\\r\\nok")
    elif path == b"/many-headers":
        c.sendall(b"HTTP/1.1 200 OK\\r\\n" + b"".join(b"x-h%d: v\\r\\n" % i for i in range(20000)) + b"content-length: 2\\r\\n\\r\\nok")
    elif path == b"/slowloris":
        c.sendall(b"HTTP/1.1 200 OK\\r\\nx-slow: ")
        end = time.time() + 20
        while time.time() < end:
            c.sendall(b"z")
            time.sleep(0.5)
    elif path == b"/reset":
        rst(c)
    elif path == b"/reset-mid-body":
        c.sendall(b"HTTP/1.1 200 OK\\r\\ncontent-length: 100000\\r\\n\\r\\n" + b"y" * 1000)
        time.sleep(0.05)
        rst(c)
    elif path == b"/cut":
        c.sendall(b"HTTP/1.1 200 OK\\r\\ncontent-length: 1000000\\r\\n\\r\\n" + b"x" * 1000)
    elif path == b"/silence":
        pass
    else:
        c.sendall(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok")
def handle(c):
    try:
        data = b""
        while b"\\r\\n\\r\\n" not in data and len(data) < 65536:
            d = c.recv(65536)
            if not d:
                return
            data += d
        parts = data.split(b" ")
        answer(c, parts[1].split(b"?")[0] if len(parts) > 1 else b"/")
    except OSError:
        pass
    finally:
        c.close()
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(256)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(${hostilePorts.host},), daemon=True).start()
serve(${hostilePorts.headers})
`;

/**
 * What a hostile path may answer. Malformed heads must become 502 SANDBOX_BAD_RESPONSE (or, for a
 * reset before any answer, SANDBOX_UNREACHABLE: the guest hung up); a head that was valid is relayed
 * and the body cut when the guest's breaks; slowloris may hold the client until its own timeout.
 */
function hostileAllowed(path: string, label: string): boolean {
  if (label === "502 SANDBOX_BAD_RESPONSE" || label === "502 SANDBOX_UNREACHABLE") return true;
  if (path === "/chunked" || path === "/reset-mid-body" || path === "/cut") return label === "200 body cut";
  if (path === "/slowloris") return label === "client timeout";
  return false;
}

/** A finished HTTP exchange as the client saw it. */
interface Answer {
  status: number;
  body: Buffer;
  /** Set when the connection broke after the head arrived. */
  bodyError?: string;
}

const keepAlive = new Agent({ keepAlive: true, maxSockets: 256 });

/** One HTTP/1.1 request on loopback with node:http (it can send any Host, which fetch cannot). */
function send(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: Buffer | string; timeoutMs: number },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const req = httpRequest(
      {
        host: target.hostname,
        port: target.port,
        path: `${target.pathname}${target.search}`,
        method: options.method ?? "GET",
        headers: options.headers,
        agent: keepAlive,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on("aborted", () => undefined);
        res.on("error", (err) =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), bodyError: err.message }),
        );
      },
    );
    req.setTimeout(options.timeoutMs, () => req.destroy(new ClientTimeout()));
    req.on("error", reject);
    req.end(options.body);
  });
}

class ClientTimeout extends Error {
  constructor() {
    super("client timeout");
  }
}

class UnexpectedAnswer extends Error {}

function errorCode(body: Buffer): string | undefined {
  try {
    const parsed = JSON.parse(body.toString("utf8")) as { error?: { code?: unknown } };
    return typeof parsed.error?.code === "string" ? parsed.error.code : undefined;
  } catch {
    return undefined;
  }
}

/** The label of an answer: status, plus the error code for errors (or "no error shape"). */
function labelOf(answer: Answer): string {
  if (answer.bodyError !== undefined) return `${answer.status} body cut`;
  if (answer.status < 400) return String(answer.status);
  return `${answer.status} ${errorCode(answer.body) ?? "(no error shape)"}`;
}

function labelOfError(err: unknown): string {
  if (err instanceof ClientTimeout) return "client timeout";
  if (err instanceof UnexpectedAnswer) return `wrong answer: ${err.message}`;
  const e = err as NodeJS.ErrnoException;
  return `transport: ${e.code ?? e.message}`;
}

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}

/** p50, p95 and p99 of a list of milliseconds. */
export function quantiles(samples: number[]): { p50: number; p95: number; p99: number; min: number; max: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    p50: percentile(sorted, 0.5),
    p95: percentile(sorted, 0.95),
    p99: percentile(sorted, 0.99),
    min: sorted[0] ?? Number.NaN,
    max: sorted.at(-1) ?? Number.NaN,
  };
}

/** Start time of a process (field 22 of /proc/<pid>/stat), so a restarted process under a reused PID is told apart. */
async function processStart(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
  if (stat === undefined) return undefined;
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): a zombie has exited.
  if (fields[0] === "Z") return undefined;
  return fields[19];
}

interface EdgeProcess {
  url: string;
  pid: number;
  child: ChildProcess;
  exit?: { code: number | null; signal: NodeJS.Signals | null };
  logFile: string;
  stop(): Promise<void>;
}

/** The Node edge as its own process (`node --import tsx edge/node.ts`), so a crash is a process exit we can see. */
async function startEdgeProcess(env: Record<string, string>, dir: string): Promise<EdgeProcess> {
  const port = await freePort();
  const logFile = join(dir, "edge.log");
  const fd = openSync(logFile, "a");
  const base: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith("WRENN_") && !k.startsWith("AGENT_")) base[k] = v;
  }
  const child = spawn(process.execPath, ["--import", "tsx", "edge/node.ts"], {
    cwd: repoRoot,
    env: { ...base, ...env, WRENN_PORT: String(port), WRENN_HOST: "127.0.0.1" },
    stdio: ["ignore", fd, fd],
  });
  closeSync(fd);
  if (child.pid === undefined) throw new Error("could not spawn the edge");
  const edge: EdgeProcess = {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
    child,
    logFile,
    async stop() {
      if (edge.exit) return;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
  child.once("exit", (code, signal) => {
    edge.exit = { code, signal };
  });
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (edge.exit) {
      throw new Error(`edge exited (${JSON.stringify(edge.exit)}):\n${(await readFile(logFile, "utf8")).slice(-3000)}`);
    }
    const health = await fetch(`${edge.url}/health`)
      .then(async (r) => (r.ok ? ((await r.json()) as { starting?: string[] }) : undefined))
      .catch(() => undefined);
    if (health && health.starting === undefined) return edge;
    if (Date.now() > deadline) {
      await edge.stop();
      throw new Error(`edge not ready after 90 s:\n${(await readFile(logFile, "utf8")).slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A counting gate for churn sandboxes: at most `size` held at once. */
class Slots {
  #free: number;
  constructor(size: number) {
    this.#free = size;
  }
  tryTake(): boolean {
    if (this.#free === 0) return false;
    this.#free--;
    return true;
  }
  give(): void {
    this.#free++;
  }
}

interface Guest {
  id: string;
  /** envd's PID and start time inside the guest, and the runtime's PID on the host. */
  envd: string;
  hostPid?: number;
  hostStart?: string;
}

/** Runs the mixed load against a fresh stack and checks what it must; never throws for a failed check. */
export async function runMixedLoad(options: MixedLoadOptions): Promise<MixedLoadResult> {
  const { log } = options;
  const dir = await mkdtemp(join(tmpdir(), "wrenn-load-"));
  const adminKey = `wrn_load_admin_${randomBytes(16).toString("hex")}`;
  const encryptionKey = randomBytes(32).toString("hex");
  let postgres: PostgresServer | undefined;
  let agent: AgentProcess | undefined;
  let edge: EdgeProcess | undefined;
  // An interrupted bench (Ctrl-C) still stops what it started.
  let cleaning: Promise<void> | undefined;
  const cleanup = () => {
    cleaning ??= (async () => {
      await edge?.stop().catch(() => {});
      await agent?.stop().catch((err: unknown) => log(`stopping the agent: ${String(err)}`));
      await postgres?.stop().catch(() => {});
      await rm(dir, { recursive: true, force: true });
    })();
    return cleaning;
  };
  const onSignal = (signal: NodeJS.Signals) => {
    log(`${signal}: stopping the stack`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    log(`starting PostgreSQL, a ${options.runtime} agent and the edge`);
    postgres = await startPostgres();
    agent = await startAgentProcess({ runtime: options.runtime });
    edge = await startEdgeProcess(
      {
        DATABASE_URL: postgres.url,
        WRENN_ENCRYPTION_KEY: encryptionKey,
        WRENN_ADMIN_API_KEY: adminKey,
        // The per-key limiter would turn the load into 429s; it has its own bench (rate-limit).
        WRENN_RATE_LIMIT_PER_SEC: "0",
        // Sweeps run during the load too, as in production: they race creates and kills.
        WRENN_RECONCILE_INTERVAL_SEC: "10",
        WRENN_LOG_LEVEL: "warn",
      },
      dir,
    );
    return await drive(options, { postgres, agent, edge, adminKey, encryptionKey });
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await cleanup();
  }
}

interface Stack {
  postgres: PostgresServer;
  agent: AgentProcess;
  edge: EdgeProcess;
  adminKey: string;
  encryptionKey: string;
}

async function drive(options: MixedLoadOptions, stack: Stack): Promise<MixedLoadResult> {
  const { log } = options;
  const { agent, edge } = stack;
  const api = async (key: string, method: string, path: string, body?: unknown, timeoutMs = 120_000): Promise<Answer> =>
    send(`${edge.url}${path}`, {
      method,
      headers: {
        "x-api-key": key,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      timeoutMs,
    });
  const must = async (what: string, answer: Promise<Answer>, status: number): Promise<Buffer> => {
    const a = await answer;
    if (a.status !== status) throw new Error(`${what}: ${a.status} ${a.body.toString("utf8").slice(0, 500)}`);
    return a.body;
  };

  await must(
    "register the host",
    api(stack.adminKey, "POST", "/v1/hosts", { address: agent.url, token: agent.token }),
    201,
  );
  const made = JSON.parse(
    (
      await must(
        "create a team key",
        api(stack.adminKey, "POST", "/v1/api-keys", { name: "load", newTeamName: "mixed-load" }),
        201,
      )
    ).toString("utf8"),
  ) as { secret: string; teamId: string };
  const key = made.secret;
  const create = async () =>
    JSON.parse(
      (
        await must("create", api(key, "POST", "/v1/sandboxes", { template: "minimal", timeoutSec: 1800 }), 201)
      ).toString("utf8"),
    ) as { id: string };
  const exec = async (id: string, cmd: string, stdin?: string) => {
    const out = JSON.parse(
      (
        await must(
          `exec ${cmd.slice(0, 40)}`,
          api(key, "POST", `/v1/sandboxes/${id}/exec`, { cmd, ...(stdin ? { stdin } : {}) }),
          200,
        )
      ).toString("utf8"),
    ) as { stdout: string; stderr: string; exitCode: number };
    if (out.exitCode !== 0) throw new Error(`exec ${cmd.slice(0, 40)} exited ${out.exitCode}: ${out.stderr}`);
    return out.stdout;
  };
  const upload = (id: string, path: string, bytes: Buffer, timeoutMs = 120_000) => {
    const boundary = `----wrennload${randomBytes(8).toString("hex")}`;
    const body = Buffer.concat([
      Buffer.from(
        `--${boundary}\r\ncontent-disposition: form-data; name="path"\r\n\r\n${path}\r\n` +
          `--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="f"\r\ncontent-type: application/octet-stream\r\n\r\n`,
      ),
      bytes,
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]);
    return send(`${edge.url}/v1/sandboxes/${id}/files/write`, {
      method: "POST",
      headers: { "x-api-key": key, "content-type": `multipart/form-data; boundary=${boundary}` },
      body,
      timeoutMs,
    });
  };
  /** envd's PID and start time in the guest: the parent of the shell envd runs for the exec. */
  /**
   * envd's PID, start time and command line in the guest: the parent of the shell envd runs for an
   * exec. Asked of the agent directly, so an edge that went down is not taken for an envd that did.
   */
  const envdIdentity = async (id: string) => {
    const script = 'p=$PPID; printf "%s %s " "$p" "$(cut -d" " -f22 /proc/$p/stat)"; tr "\\0" " " < /proc/$p/cmdline';
    const answer = await agent.client.exec(
      { sandboxId: id, cmd: "/bin/bash", args: ["-c", script], timeoutSec: 30 },
      { timeoutMs: 60_000 },
    );
    const out = new TextDecoder().decode(answer.stdout);
    if (answer.exitCode !== 0 || !out.includes("envd")) {
      throw new Error(`the exec's parent in ${id} is not envd: ${out} ${new TextDecoder().decode(answer.stderr)}`);
    }
    return out.trim();
  };
  const hostIdentity = async (id: string) => {
    const state = JSON.parse(await readFile(join(agent.stateDir, "sandboxes", id, "state.json"), "utf8")) as {
      handle?: { pid?: number };
    };
    const pid = state.handle?.pid;
    return { pid, start: pid === undefined ? undefined : await processStart(pid) };
  };

  // Long-lived guests: the work sandboxes (exec, files, a web server behind the proxy) and the hostile one.
  log(`creating ${options.workSandboxes} work sandboxes and the hostile one`);
  const created: string[] = [];
  const [hostileBox, ...workBoxes] = await Promise.all(
    Array.from({ length: options.workSandboxes + 1 }, async () => {
      const { id } = await create();
      created.push(id);
      return id;
    }),
  );
  if (hostileBox === undefined) throw new Error("no hostile sandbox");
  const blob = randomBytes(256 * 1024);
  const blobHash = createHash("sha256").update(blob).digest("hex");
  await Promise.all(
    workBoxes.map(async (id) => {
      await exec(id, "mkdir -p /tmp/www");
      await must("upload the web blob", upload(id, "/tmp/www/blob.bin", blob), 200);
      await exec(id, `cd /tmp/www && (nohup python3 -m http.server ${webPort} --bind 0.0.0.0 >/dev/null 2>&1 &)`);
    }),
  );
  await exec(hostileBox, "cat > /tmp/hostile.py && (nohup python3 /tmp/hostile.py >/dev/null 2>&1 &)", hostileServer);
  const proxied = (id: string, port: number, path: string, timeoutMs: number, via: "headers" | "host") =>
    via === "headers"
      ? send(`${edge.url}${path}`, {
          headers: { "e2b-sandbox-id": id, "e2b-sandbox-port": String(port) },
          timeoutMs,
        })
      : send(`${edge.url}${path}`, { headers: { host: `${port}-${id}.localhost` }, timeoutMs });
  const waitFor = async (what: string, probe: () => Promise<boolean>) => {
    const deadline = Date.now() + 60_000;
    while (!(await probe().catch(() => false))) {
      if (Date.now() > deadline) throw new Error(`${what} never answered`);
      await new Promise((r) => setTimeout(r, 300));
    }
  };
  for (const id of workBoxes) {
    await waitFor(`the web server in ${id}`, async () => {
      const a = await proxied(id, webPort, "/blob.bin", 10_000, "headers");
      return a.status === 200;
    });
  }
  for (const via of ["headers", "host"] as const) {
    await waitFor(`the hostile server (${via})`, async () => {
      const a = await proxied(hostileBox, hostilePorts[via], "/ok", 10_000, via);
      return a.status === 200;
    });
  }
  const guests: Guest[] = [];
  for (const id of [hostileBox, ...workBoxes]) {
    const host = await hostIdentity(id);
    guests.push({
      id,
      envd: await envdIdentity(id),
      ...(host.pid !== undefined ? { hostPid: host.pid } : {}),
      ...(host.start !== undefined ? { hostStart: host.start } : {}),
    });
  }
  const edgeStart = await processStart(edge.pid);
  const agentStart = await processStart(agent.pid);

  // The load.
  const ops = Object.fromEntries(opKinds.map((k) => [k, { latencies: [], ok: 0, outcomes: {} }])) as unknown as Record<
    OpKind,
    OpStats
  >;
  let unexpected5xx = 0;
  let otherFailures = 0;
  const samples: string[] = [];
  const sampleCounts = new Map<string, number>();
  const note = (kind: OpKind, label: string, ms: number, ok: boolean, detail: string) => {
    const stats = ops[kind];
    stats.latencies.push(ms);
    stats.outcomes[label] = (stats.outcomes[label] ?? 0) + 1;
    if (ok) {
      stats.ok++;
      return;
    }
    const status = Number(/^(\d{3})/.exec(label)?.[1] ?? 0);
    if (status >= 500) unexpected5xx++;
    else otherFailures++;
    const seen = sampleCounts.get(`${kind} ${label}`) ?? 0;
    sampleCounts.set(`${kind} ${label}`, seen + 1);
    if (seen < 3) samples.push(`${kind}: ${label} ${detail}`.slice(0, 400));
  };
  /** Times one operation; `check` throws UnexpectedAnswer when the bytes are wrong. */
  const timed = async (kind: OpKind, expected: number, run: () => Promise<Answer>, check?: (a: Answer) => void) => {
    const t0 = performance.now();
    try {
      const a = await run();
      const label = labelOf(a);
      const ms = performance.now() - t0;
      if (a.status !== expected || a.bodyError !== undefined) {
        note(kind, label, ms, false, a.bodyError ?? a.body.toString("utf8").slice(0, 300));
        return undefined;
      }
      try {
        check?.(a);
      } catch (err) {
        note(kind, labelOfError(err), ms, false, "");
        return undefined;
      }
      note(kind, label, ms, true, "");
      return a;
    } catch (err) {
      note(kind, labelOfError(err), performance.now() - t0, false, String(err));
      return undefined;
    }
  };

  const hostileByPath: Record<string, Record<string, number>> = {};
  const createdOk: string[] = [];
  const killedOk: string[] = [];
  const churn = new Slots(options.maxLiveChurn);
  const loadAvgBefore = loadavg();
  const started = performance.now();
  const end = Date.now() + options.seconds * 1000;
  const webHash = (a: Answer) => {
    if (createHash("sha256").update(a.body).digest("hex") !== blobHash) {
      throw new UnexpectedAnswer(`proxied blob of ${a.body.length} bytes differs`);
    }
  };

  const churnOnce = async () => {
    const made = await timed("create", 201, () =>
      api(key, "POST", "/v1/sandboxes", { template: "minimal", timeoutSec: 600 }),
    );
    if (!made) return;
    const { id } = JSON.parse(made.body.toString("utf8")) as { id: string };
    createdOk.push(id);
    await timed(
      "exec",
      200,
      () => api(key, "POST", `/v1/sandboxes/${id}/exec`, { cmd: "/bin/echo", args: [id] }),
      (a) => {
        if ((JSON.parse(a.body.toString("utf8")) as { stdout?: string }).stdout !== `${id}\n`) {
          throw new UnexpectedAnswer("echo in a new sandbox");
        }
      },
    );
    const killed = await timed("kill", 204, () => api(key, "DELETE", `/v1/sandboxes/${id}`));
    if (killed) killedOk.push(id);
  };

  const client = async (n: number) => {
    let i = 0;
    while (Date.now() < end) {
      i++;
      const box = workBoxes[(n + i) % workBoxes.length] as string;
      const roll = Math.random();
      if (roll < 0.1 && churn.tryTake()) {
        try {
          await churnOnce();
        } finally {
          churn.give();
        }
      } else if (roll < 0.35) {
        const word = `c${n}-${i}-${randomBytes(4).toString("hex")}`;
        const viaShell = i % 2 === 0;
        await timed(
          "exec",
          200,
          () =>
            api(
              key,
              "POST",
              `/v1/sandboxes/${box}/exec`,
              viaShell ? { cmd: `printf '%s' ${word} | wc -c` } : { cmd: "/bin/echo", args: [word] },
            ),
          (a) => {
            const out = (JSON.parse(a.body.toString("utf8")) as { stdout?: string }).stdout?.trim();
            if (out !== (viaShell ? String(word.length) : word)) throw new UnexpectedAnswer(`exec said ${out}`);
          },
        );
      } else if (roll < 0.55) {
        const bytes = randomBytes(64 * 1024);
        const path = `/tmp/load-${n}-${i % 4}.bin`;
        const up = await timed("upload", 200, () => upload(box, path, bytes));
        if (up) {
          await timed(
            "download",
            200,
            () => api(key, "POST", `/v1/sandboxes/${box}/files/read`, { path }),
            (a) => {
              if (!a.body.equals(bytes)) throw new UnexpectedAnswer(`downloaded ${a.body.length} bytes differ`);
            },
          );
        }
      } else if (roll < 0.8) {
        await timed("proxy (E2B headers)", 200, () => proxied(box, webPort, "/blob.bin", 60_000, "headers"), webHash);
      } else if (roll < 0.9) {
        await timed("proxy (Host)", 200, () => proxied(box, webPort, "/blob.bin", 60_000, "host"), webHash);
      } else {
        await hostileOnce(n + i);
      }
    }
  };

  const hostileOnce = async (n: number) => {
    const path = hostilePaths[n % hostilePaths.length] as string;
    const via = n % 2 === 0 ? "headers" : "host";
    const t0 = performance.now();
    let label: string;
    let detail = "";
    try {
      const a = await proxied(hostileBox, hostilePorts[via], path, 8_000, via);
      label = labelOf(a);
      detail = a.body.toString("utf8").slice(0, 200);
    } catch (err) {
      label = labelOfError(err);
      detail = String(err);
    }
    const byPath = hostileByPath[path] ?? {};
    byPath[label] = (byPath[label] ?? 0) + 1;
    hostileByPath[path] = byPath;
    note("hostile proxy", label, performance.now() - t0, hostileAllowed(path, label), `${via} ${path} ${detail}`);
  };
  // Two more loops hit the hostile guest without pause, one per routing style.
  const hostileLoop = async (offset: number) => {
    let i = offset;
    while (Date.now() < end) {
      await hostileOnce(i);
      i += 2;
    }
  };

  log(`${options.clients} clients for ${options.seconds} s (churn sandboxes at once ≤ ${options.maxLiveChurn})`);
  await Promise.all([...Array.from({ length: options.clients }, (_, n) => client(n)), hostileLoop(0), hostileLoop(1)]);
  const elapsedSec = (performance.now() - started) / 1000;
  const loadAvgAfter = loadavg();
  log(`load finished after ${elapsedSec.toFixed(1)} s; checking processes and rows`);

  // Crashes: same processes as at the start, and each still answers.
  const crashes: string[] = [];
  if (edge.exit || (await processStart(edge.pid)) !== edgeStart) {
    crashes.push(`edge (pid ${edge.pid}) exited: ${JSON.stringify(edge.exit ?? "start time changed")}`);
  } else {
    const health = await send(`${edge.url}/health`, { timeoutMs: 10_000 }).catch(() => undefined);
    if (health?.status !== 200) crashes.push(`edge (pid ${edge.pid}) alive but /health answered ${health?.status}`);
  }
  if ((await processStart(agent.pid)) !== agentStart) {
    crashes.push(`agent (pid ${agent.pid}) exited or was replaced`);
  } else {
    const health = await send(`${agent.url}/health`, { timeoutMs: 10_000 }).catch(() => undefined);
    if (health?.status !== 200) crashes.push(`agent (pid ${agent.pid}) alive but /health answered ${health?.status}`);
  }
  for (const guest of guests) {
    const now = await envdIdentity(guest.id).catch((err: unknown) => `unreachable: ${String(err)}`);
    if (now !== guest.envd) crashes.push(`envd in ${guest.id}: was "${guest.envd}", now "${now}"`);
    if (guest.hostPid !== undefined && (await processStart(guest.hostPid)) !== guest.hostStart) {
      crashes.push(`runtime process ${guest.hostPid} of ${guest.id} exited`);
    }
  }

  // Tear the long-lived guests down through the API, as a client would.
  for (const id of [hostileBox, ...workBoxes]) {
    const killed = await timed("kill", 204, () => api(key, "DELETE", `/v1/sandboxes/${id}`));
    if (killed) killedOk.push(id);
  }
  createdOk.push(...created);

  // Rows: every 201 has its row, every 204 ended it; then a sweep, and nothing active on either side.
  const lostRows: string[] = [];
  const database = new pg.Client({ connectionString: stack.postgres.url });
  await database.connect();
  let rows: { id: string; state: string }[] = [];
  let activeAfter: { id: string; state: string }[] = [];
  let runtimeAfter: string[] = [];
  let sweep: MixedLoadResult["accounting"]["sweep"];
  try {
    // Creates whose client gave up may still be finishing on the edge: let them settle first.
    // (A dead edge finishes nothing: then the sweep below settles them.)
    const settleBy = Date.now() + (edge.exit ? 0 : 120_000);
    for (;;) {
      const { rows: busy } = await database.query<{ n: string }>(
        "select count(*) as n from sandboxes where team_id = $1 and state in ('pending','starting')",
        [made.teamId],
      );
      if (Number(busy[0]?.n ?? 0) === 0 || Date.now() > settleBy) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    rows = (
      await database.query<{ id: string; state: string }>("select id, state from sandboxes where team_id = $1", [
        made.teamId,
      ])
    ).rows;
    const byId = new Map<string, number>();
    for (const row of rows) byId.set(row.id, (byId.get(row.id) ?? 0) + 1);
    for (const id of createdOk) {
      const count = byId.get(id) ?? 0;
      if (count !== 1) lostRows.push(`created ${id} (201) has ${count} rows`);
    }
    for (const id of killedOk) {
      const row = rows.find((r) => r.id === id);
      if (row && row.state !== "stopped") lostRows.push(`killed ${id} (204) is still ${row.state}`);
    }
    // One sweep with no grace: whatever the live paths left behind on either side is settled by it.
    const db = await openNodeDatabase({ databaseUrl: stack.postgres.url });
    try {
      const deps = await createServiceDeps({
        encryptionKey: stack.encryptionKey,
        config: { maxUploadBytes: 1024 ** 3, maxJsonBytes: 1024 ** 2 },
        logger: noopLogger,
      });
      const ctx = serviceContext(deps, { db: db.db, requestId: "load-sweep" });
      // The edge's own sweep may hold the lease for a moment.
      for (let attempt = 0; attempt < 30; attempt++) {
        const summary = await runReconcileSweep(ctx, { orphanGraceMs: 1_000, stuckAfterMs: 1_000 });
        if (summary.ran) {
          sweep = {
            ran: summary.ran,
            changed: summary.changed,
            destroyedOnHost: summary.destroyedOnHost,
            actionFailures: summary.actionFailures,
          };
          break;
        }
        await new Promise((r) => setTimeout(r, 1_000));
      }
    } finally {
      await db.close();
    }
    if (!sweep) lostRows.push("the reconcile sweep never got its lease");
    activeAfter = (
      await database.query<{ id: string; state: string }>(
        "select id, state from sandboxes where team_id = $1 and state not in ('stopped', 'error')",
        [made.teamId],
      )
    ).rows;
    for (const row of activeAfter) lostRows.push(`orphan row ${row.id} is ${row.state} after the sweep`);
    runtimeAfter = (await agent.client.listSandboxes({})).sandboxes.map((s) => s.sandboxId);
    for (const id of runtimeAfter) lostRows.push(`orphan runtime sandbox ${id} after the sweep`);
  } finally {
    await database.end();
  }

  const edgeLog = await readFile(edge.logFile, "utf8").catch(() => "");
  const lines = edgeLog.split("\n").filter((l) => l.trim() !== "");
  const edgeRawLines = lines.filter((l) => !l.startsWith("{"));
  const edgeErrorLines = lines.filter((l) => l.startsWith('{"') && l.includes('"level":"error"')).length;

  return {
    options: {
      seconds: options.seconds,
      clients: options.clients,
      runtime: options.runtime,
      maxLiveChurn: options.maxLiveChurn,
      workSandboxes: options.workSandboxes,
    },
    elapsedSec,
    ops,
    unexpected5xx,
    otherFailures,
    samples,
    crashes,
    lostRows,
    accounting: {
      created: createdOk.length,
      killed: killedOk.length,
      rows: rows.length,
      activeRowsAfter: activeAfter.length,
      runtimeSandboxesAfter: runtimeAfter.length,
      ...(sweep ? { sweep } : {}),
    },
    hostileByPath,
    edgeRawLines,
    edgeErrorLines,
    loadAvgBefore,
    loadAvgAfter,
  };
}
