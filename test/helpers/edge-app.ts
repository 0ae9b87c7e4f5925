import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, createClient, createRouterTransport } from "@connectrpc/connect";
import { createApp } from "../../edge/app.js";
import type { AgentConnector, HostTarget, ProxyRequestInit } from "../../edge/clients/agent.js";
import type { App, AppDeps } from "../../edge/context.js";
import type { DatabaseHandle } from "../../edge/db/client.js";
import type { EdgeConfig } from "../../edge/env.js";
import { type Logger, noopLogger } from "../../edge/logger.js";
import { openNodeDatabase } from "../../edge/node/database.js";
import { nodeDocsAssets } from "../../edge/node/docs-assets.js";
import { createApiKey } from "../../edge/services/api-keys/create.js";
import { ensureAdminKey } from "../../edge/services/auth/bootstrap.js";
import { verifyApiKey } from "../../edge/services/auth/verify-api-key.js";
import { createServiceDeps, type ServiceContext, serviceContext, teamContext } from "../../edge/services/context.js";
import type { SecretBox } from "../../edge/services/crypto.js";
import {
  type ConnectionEntry,
  ConnectionEntrySchema,
  ConnectionProtocol,
  ConnectionVerdict,
  type CreateSandboxRequest,
  EntrySchema,
  EntryType,
  HostAgentService,
  IsolationClass,
  Runtime,
  type Sandbox,
  SandboxSchema,
  SandboxState,
  SnapshotFileSchema,
  StopReason,
  TimeoutAction,
} from "../../proto/gen/hostagent/v1/hostagent_pb.js";

/** A fixed test encryption key (tests only). */
export const testEncryptionKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/** Which methods of the fake agent should fail, and how. */
type FailurePlan = Map<string, ConnectError>;

interface FakeSandbox {
  sandbox: Sandbox;
  token: string;
  files: Map<string, Uint8Array>;
  dirs: Set<string>;
}

/**
 * An in-memory HostAgentService, for route tests at the protocol boundary. It keeps sandboxes in a
 * map, checks the bearer token, answers envd's `/files` through `proxy`, and can be told to fail a
 * method (or be down entirely).
 */
export class FakeAgent {
  readonly address: string;
  readonly token: string;
  readonly sandboxes = new Map<string, FakeSandbox>();
  readonly failures: FailurePlan = new Map();
  /** Every call as `method sandboxId`, in order. */
  readonly calls: string[] = [];
  /** Sandboxes whose ExecStream call was cancelled by the edge (the client went away). */
  readonly cancelledStreams: string[] = [];
  /** When true every call answers UNAVAILABLE, as if the agent were down. */
  down = false;
  capacity = { vcpus: 256, memoryMb: 131_072, maxSandboxes: 256 };
  templates: string[] = ["minimal"];
  /** The runtime GetHostInfo reports (and sandboxes carry). */
  runtime: Runtime = Runtime.NAMESPACE;
  /** The isolation class GetHostInfo reports; UNSPECIFIED plays an agent older than the field. */
  isolation: IsolationClass = IsolationClass.NAMESPACE;
  /** Bytes of snapshot files PauseSandbox reports (0: none, as when pausing in place). */
  snapshotBytes = 0;
  /** Each sandbox's connection log, kept after the sandbox is destroyed (as the agent keeps it). */
  readonly connections = new Map<string, ConnectionEntry[]>();
  private readonly connectionWaiters = new Set<() => void>();

  /** Appends to a sandbox's connection log (seq and time filled in when absent); watchers see it. */
  addConnection(sandboxId: string, entry: Partial<Omit<ConnectionEntry, "$typeName">>): ConnectionEntry {
    const log = this.connections.get(sandboxId) ?? [];
    this.connections.set(sandboxId, log);
    const full = create(ConnectionEntrySchema, {
      seq: BigInt(log.length + 1),
      time: timestampFromDate(new Date()),
      protocol: ConnectionProtocol.TCP,
      verdict: ConnectionVerdict.ALLOWED,
      rule: "default",
      list: "default",
      ...entry,
    });
    log.push(full);
    for (const wake of this.connectionWaiters) wake();
    return full;
  }

  private connectionMatches(
    e: ConnectionEntry,
    req: { afterSeq: bigint; verdict: ConnectionVerdict; protocol: ConnectionProtocol },
  ): boolean {
    return (
      e.seq > req.afterSeq &&
      (req.verdict === ConnectionVerdict.UNSPECIFIED || e.verdict === req.verdict) &&
      (req.protocol === ConnectionProtocol.UNSPECIFIED || e.protocol === req.protocol)
    );
  }

  private async *watchConnectionEntries(
    req: { sandboxId: string; afterSeq: bigint; verdict: ConnectionVerdict; protocol: ConnectionProtocol },
    headerToken: string | null,
    signal: AbortSignal,
  ) {
    this.check("watchConnections", req.sandboxId, headerToken);
    let after = req.afterSeq;
    try {
      while (!signal.aborted) {
        for (const entry of this.connections.get(req.sandboxId) ?? []) {
          if (entry.seq <= after) continue;
          after = entry.seq;
          if (this.connectionMatches(entry, { ...req, afterSeq: 0n })) yield { entry };
        }
        if (signal.aborted) break;
        await new Promise<void>((resolve) => {
          const wake = () => {
            this.connectionWaiters.delete(wake);
            signal.removeEventListener("abort", wake);
            resolve();
          };
          this.connectionWaiters.add(wake);
          signal.addEventListener("abort", wake, { once: true });
        });
      }
    } finally {
      // Reached when the caller goes away, whether the generator waited or was stopped at a yield.
      this.cancelledStreams.push(req.sandboxId);
    }
  }

  constructor(address: string, token: string) {
    this.address = address;
    this.token = token;
  }

  /** Work run once, inside the next call of `method` after it has acted (e.g. a sweep racing the call). */
  readonly afterNext = new Map<string, () => Promise<void>>();

  /** Makes the next call of `method` fail with `code`. */
  failNext(method: string, code: Code, message = `injected ${Code[code]}`): void {
    this.failures.set(method, new ConnectError(message, code));
  }

  private async runAfter(method: string): Promise<void> {
    const work = this.afterNext.get(method);
    this.afterNext.delete(method);
    await work?.();
  }

  private check(method: string, sandboxId: string, headerToken: string | null): void {
    this.calls.push(`${method} ${sandboxId}`.trim());
    if (this.down) throw new ConnectError("agent is down", Code.Unavailable);
    if (headerToken !== `Bearer ${this.token}`) throw new ConnectError("bad host token", Code.Unauthenticated);
    const failure = this.failures.get(method);
    if (failure) {
      this.failures.delete(method);
      throw failure;
    }
  }

  private get(id: string): FakeSandbox {
    const sb = this.sandboxes.get(id);
    if (!sb) throw new ConnectError(`sandbox ${id} not found`, Code.NotFound);
    return sb;
  }

  private running(id: string): FakeSandbox {
    const sb = this.get(id);
    if (sb.sandbox.state !== SandboxState.RUNNING)
      throw new ConnectError(`sandbox ${id} is not running`, Code.FailedPrecondition);
    return sb;
  }

  private start(req: CreateSandboxRequest): Sandbox {
    const existing = this.sandboxes.get(req.sandboxId);
    if (existing) return existing.sandbox;
    if (!this.templates.includes(req.template))
      throw new ConnectError(`template ${req.template} not found`, Code.NotFound);
    const now = new Date();
    const sandbox = create(SandboxSchema, {
      sandboxId: req.sandboxId,
      template: req.template,
      state: SandboxState.RUNNING,
      vcpus: req.vcpus,
      memoryMb: req.memoryMb,
      createdAt: timestampFromDate(now),
      timeoutAction: req.timeoutAction,
      metadata: req.metadata,
      runtime: this.runtime,
      envdVersion: "0.6.4",
      internetAccess: req.internetAccess ?? true,
      ...(req.network ? { network: req.network } : {}),
      ...(req.timeoutSec > 0 ? { endAt: timestampFromDate(new Date(now.getTime() + req.timeoutSec * 1000)) } : {}),
    });
    this.sandboxes.set(req.sandboxId, {
      sandbox,
      token: req.envdAccessToken,
      files: new Map(),
      dirs: new Set(["/home/user"]),
    });
    return sandbox;
  }

  private async *execStreamEvents(
    sandboxId: string,
    cmd: string,
    args: string[],
    headerToken: string | null,
    signal: AbortSignal,
  ) {
    this.check("execStream", sandboxId, headerToken);
    this.running(sandboxId);
    const result = fakeExec(cmd, args, new Uint8Array());
    yield { event: { case: "started" as const, value: { pid: 42 } } };
    if (args[2] === "hang") {
      // Runs until the caller goes away, like a long command whose client disconnects.
      if (!signal.aborted) {
        await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
      }
      this.cancelledStreams.push(sandboxId);
      return;
    }
    if (result.stdout.length > 0) yield { event: { case: "stdout" as const, value: result.stdout } };
    if (result.stderr.length > 0) yield { event: { case: "stderr" as const, value: result.stderr } };
    yield { event: { case: "exited" as const, value: { exitCode: result.exitCode, error: "" } } };
  }

  private async *readFileChunks(sandboxId: string, path: string, headerToken: string | null) {
    this.check("readFileStream", sandboxId, headerToken);
    const content = this.running(sandboxId).files.get(path);
    if (!content) throw new ConnectError(`${path} not found`, Code.NotFound);
    yield { chunk: content };
  }

  /** The Connect router implementing HostAgentService. */
  routes = (router: ConnectRouter): void => {
    const auth = (ctx: { requestHeader: Headers }) => ctx.requestHeader.get("authorization");
    router.service(HostAgentService, {
      createSandbox: async (req, ctx) => {
        this.check("createSandbox", req.sandboxId, auth(ctx));
        return { sandbox: this.start(req) };
      },
      destroySandbox: async (req, ctx) => {
        this.check("destroySandbox", req.sandboxId, auth(ctx));
        this.get(req.sandboxId);
        this.sandboxes.delete(req.sandboxId);
        await this.runAfter("destroySandbox");
        return {};
      },
      pauseSandbox: async (req, ctx) => {
        this.check("pauseSandbox", req.sandboxId, auth(ctx));
        const sb = this.get(req.sandboxId);
        if (sb.sandbox.state === SandboxState.PAUSED) throw new ConnectError("already paused", Code.FailedPrecondition);
        sb.sandbox.state = SandboxState.PAUSED;
        sb.sandbox.endAt = undefined;
        sb.sandbox.pausedWithoutMemory = req.keepMemory === false;
        sb.sandbox.snapshotFiles =
          this.snapshotBytes > 0
            ? [create(SnapshotFileSchema, { name: "memory", sizeBytes: BigInt(this.snapshotBytes) })]
            : [];
        return { sandbox: sb.sandbox };
      },
      resumeSandbox: async (req, ctx) => {
        this.check("resumeSandbox", req.sandboxId, auth(ctx));
        const sb = this.get(req.sandboxId);
        if (sb.sandbox.state !== SandboxState.PAUSED) throw new ConnectError("not paused", Code.FailedPrecondition);
        sb.sandbox.state = SandboxState.RUNNING;
        sb.sandbox.endAt = timestampFromDate(new Date(Date.now() + (req.timeoutSec ?? 300) * 1000));
        return { sandbox: sb.sandbox };
      },
      setTimeout: async (req, ctx) => {
        this.check("setTimeout", req.sandboxId, auth(ctx));
        const sb = this.get(req.sandboxId);
        sb.sandbox.endAt =
          req.timeoutSec > 0 ? timestampFromDate(new Date(Date.now() + req.timeoutSec * 1000)) : undefined;
        if (req.timeoutAction !== undefined) sb.sandbox.timeoutAction = req.timeoutAction;
        return { sandbox: sb.sandbox };
      },
      updateSandboxNetwork: async (req, ctx) => {
        this.check("updateSandboxNetwork", req.sandboxId, auth(ctx));
        const sb = this.get(req.sandboxId);
        sb.sandbox.network = req.network;
        if (req.internetAccess !== undefined) sb.sandbox.internetAccess = req.internetAccess;
        return { sandbox: sb.sandbox };
      },
      listConnections: async (req, ctx) => {
        this.check("listConnections", req.sandboxId, auth(ctx));
        const log = this.connections.get(req.sandboxId);
        if (!log && !this.sandboxes.has(req.sandboxId)) {
          throw new ConnectError(`no connection log for ${req.sandboxId}`, Code.NotFound);
        }
        const since = req.since ? timestampDate(req.since).getTime() : 0;
        const limit = req.limit || 100;
        const matching = (log ?? []).filter(
          (e) => this.connectionMatches(e, req) && (!e.time || timestampDate(e.time).getTime() >= since),
        );
        const entries = matching.slice(0, limit);
        return { entries, nextAfter: matching.length > limit ? (entries.at(-1)?.seq ?? 0n) : 0n };
      },
      watchConnections: (req, ctx) => this.watchConnectionEntries(req, auth(ctx), ctx.signal),
      getSandbox: async (req, ctx) => {
        this.check("getSandbox", req.sandboxId, auth(ctx));
        return { sandbox: this.get(req.sandboxId).sandbox };
      },
      listSandboxes: async (_req, ctx) => {
        this.check("listSandboxes", "", auth(ctx));
        return { sandboxes: [...this.sandboxes.values()].map((s) => s.sandbox), reaps: [] };
      },
      exec: async (req, ctx) => {
        this.check("exec", req.sandboxId, auth(ctx));
        this.running(req.sandboxId);
        return fakeExec(req.cmd, req.args, req.stdin);
      },
      execStream: (req, ctx) => this.execStreamEvents(req.sandboxId, req.cmd, req.args, auth(ctx), ctx.signal),
      writeFile: async (req, ctx) => {
        this.check("writeFile", req.sandboxId, auth(ctx));
        this.running(req.sandboxId).files.set(req.path, req.content);
        return {};
      },
      readFile: async (req, ctx) => {
        this.check("readFile", req.sandboxId, auth(ctx));
        const content = this.running(req.sandboxId).files.get(req.path);
        if (!content) throw new ConnectError(`${req.path} not found`, Code.NotFound);
        return { content };
      },
      readFileStream: (req, ctx) => this.readFileChunks(req.sandboxId, req.path, auth(ctx)),
      listDir: async (req, ctx) => {
        this.check("listDir", req.sandboxId, auth(ctx));
        const sb = this.running(req.sandboxId);
        if (!sb.dirs.has(req.path)) throw new ConnectError(`${req.path} not found`, Code.NotFound);
        const prefix = `${req.path.replace(/\/$/, "")}/`;
        const entries = [...sb.files.entries()]
          .filter(([p]) => p.startsWith(prefix) && !p.slice(prefix.length).includes("/"))
          .map(([p, c]) =>
            create(EntrySchema, {
              name: p.slice(prefix.length),
              path: p,
              type: EntryType.FILE,
              size: BigInt(c.length),
              mode: 0o644,
              owner: "user",
            }),
          );
        for (const d of sb.dirs) {
          if (d.startsWith(prefix) && !d.slice(prefix.length).includes("/")) {
            entries.push(
              create(EntrySchema, {
                name: d.slice(prefix.length),
                path: d,
                type: EntryType.DIRECTORY,
                mode: 0o755,
                owner: "user",
              }),
            );
          }
        }
        return { entries };
      },
      makeDir: async (req, ctx) => {
        this.check("makeDir", req.sandboxId, auth(ctx));
        const sb = this.running(req.sandboxId);
        if (sb.dirs.has(req.path)) throw new ConnectError(`${req.path} exists`, Code.AlreadyExists);
        sb.dirs.add(req.path);
        return {
          entry: create(EntrySchema, {
            name: req.path.split("/").pop() ?? "",
            path: req.path,
            type: EntryType.DIRECTORY,
            mode: 0o755,
            owner: "user",
          }),
        };
      },
      removePath: async (req, ctx) => {
        this.check("removePath", req.sandboxId, auth(ctx));
        const sb = this.running(req.sandboxId);
        if (!sb.files.delete(req.path) && !sb.dirs.delete(req.path))
          throw new ConnectError(`${req.path} not found`, Code.NotFound);
        return {};
      },
      getHostInfo: async (_req, ctx) => {
        this.check("getHostInfo", "", auth(ctx));
        return {
          runtime: this.runtime,
          availableRuntimes: [this.runtime],
          isolation: this.isolation,
          capacity: this.capacity,
          load: { sandboxes: this.sandboxes.size },
          agentVersion: "fake-1",
          envdVersion: "0.6.4",
          templates: this.templates,
          pauseToDisk: false,
          hostname: "fake",
          arch: "x86_64",
        };
      },
    });
  };

  /** Answers the agent's `/proxy/{id}/49983/files` as envd would (GET reads, POST raw or multipart writes). */
  async proxy(
    sandboxId: string,
    port: number,
    pathAndQuery: string,
    init: ProxyRequestInit,
    headerToken: string,
  ): Promise<Response> {
    this.calls.push(`proxy ${init.method} ${sandboxId}`);
    if (this.down) throw new TypeError("fetch failed: connection refused");
    if (headerToken !== this.token) return new Response("bad host token", { status: 401 });
    const sb = this.sandboxes.get(sandboxId);
    if (!sb || port !== 49983) return new Response("no such sandbox", { status: 502 });
    if (init.headers?.["x-access-token"] !== sb.token)
      return new Response('{"message":"bad access token"}', { status: 401 });
    const url = new URL(`http://envd${pathAndQuery}`);
    const path = url.searchParams.get("path") ?? "";
    if (url.pathname !== "/files") return new Response("not found", { status: 404 });
    if (init.method === "GET") {
      const content = sb.files.get(path);
      if (!content) return Response.json({ message: `${path} not found` }, { status: 404 });
      return new Response(content.slice(), { headers: { "content-length": String(content.length) } });
    }
    const upload = new Request("http://envd/files", {
      method: "POST",
      headers: init.headers ?? {},
      body: init.body as BodyInit,
      duplex: "half",
    } as RequestInit);
    // envd takes a raw body (octet-stream, path in the query) or a multipart form.
    if (upload.headers.get("content-type") === "application/octet-stream") {
      sb.files.set(path, new Uint8Array(await upload.arrayBuffer()));
      return Response.json([{ name: path.split("/").pop(), type: "file", path }]);
    }
    const form = await upload.formData();
    const file = form.get("file");
    if (!(file instanceof Blob)) return Response.json({ message: "no file part" }, { status: 400 });
    sb.files.set(path, new Uint8Array(await file.arrayBuffer()));
    return Response.json([{ name: path.split("/").pop(), type: "file", path }]);
  }
}

/** Tiny command interpreter for the fake: `echo`, `printf`, `cat` (stdin), `exit N`, `binary`, `fail`. */
function fakeExec(cmd: string, args: string[], stdin: Uint8Array) {
  const script =
    cmd === "/bin/bash" && args[0] === "-l" && args[1] === "-c" ? (args[2] ?? "") : [cmd, ...args].join(" ");
  const enc = new TextEncoder();
  if (script.startsWith("echo "))
    return {
      stdout: enc.encode(`${script.slice(5)}\n`),
      stderr: new Uint8Array(),
      exitCode: 0,
      error: "",
      truncated: false,
      durationMs: 1,
    };
  if (script === "cat")
    return { stdout: stdin, stderr: new Uint8Array(), exitCode: 0, error: "", truncated: false, durationMs: 1 };
  if (script === "binary")
    return {
      stdout: new Uint8Array([0xff, 0xfe, 0x00, 0x41]),
      stderr: new Uint8Array(),
      exitCode: 0,
      error: "",
      truncated: false,
      durationMs: 1,
    };
  const exit = /^exit (\d+)$/.exec(script);
  if (exit)
    return {
      stdout: new Uint8Array(),
      stderr: enc.encode("bye\n"),
      exitCode: Number(exit[1]),
      error: "",
      truncated: false,
      durationMs: 1,
    };
  return {
    stdout: enc.encode(script),
    stderr: new Uint8Array(),
    exitCode: 0,
    error: "",
    truncated: false,
    durationMs: 1,
  };
}

/** Connects the edge to in-memory fake agents by address. */
export class FakeAgentConnector implements AgentConnector {
  readonly agents = new Map<string, FakeAgent>();
  /** Request ids the agents saw, for propagation checks. */
  readonly requestIds: string[] = [];

  add(agent: FakeAgent): FakeAgent {
    this.agents.set(agent.address, agent);
    return agent;
  }

  private agentAt(address: string): FakeAgent | undefined {
    return this.agents.get(address);
  }

  client(host: HostTarget, requestId: string) {
    const agent = this.agentAt(host.address);
    const ids = this.requestIds;
    const transport = createRouterTransport(
      agent
        ? agent.routes
        : (router) => {
            // An address nobody listens on: every call fails as a connection would.
            router.service(HostAgentService, {});
          },
      {
        transport: {
          interceptors: [
            (next) => (req) => {
              if (!agent) throw new ConnectError("connection refused", Code.Unavailable);
              req.header.set("authorization", `Bearer ${host.token}`);
              req.header.set("x-request-id", requestId);
              ids.push(requestId);
              return next(req);
            },
          ],
        },
      },
    );
    return createClient(HostAgentService, transport);
  }

  async proxy(
    host: HostTarget,
    sandboxId: string,
    port: number,
    pathAndQuery: string,
    init: ProxyRequestInit,
  ): Promise<Response> {
    const agent = this.agentAt(host.address);
    if (!agent) throw new TypeError("fetch failed: connection refused");
    return agent.proxy(sandboxId, port, pathAndQuery, init, host.token);
  }
}

/** A test edge: the app, its database, and helpers to make teams, keys and hosts. */
export interface EdgeHarness {
  app: App;
  database: DatabaseHandle;
  secrets: SecretBox;
  agents: AgentConnector;
  /** Set when the harness uses fake agents. */
  fakes?: FakeAgentConnector;
  adminKey: string;
  config: EdgeConfig;
  /** A ServiceContext for calling services directly. */
  services(): ServiceContext;
  /**
   * The deps of another edge over the same database and agents (`createApp(h.appDeps(…))`): its own
   * key cache and process state, as a second copy of the edge behind a load balancer has.
   */
  appDeps(config?: EdgeConfig): AppDeps;
  /** Creates a new team with a (non-admin) key; returns its secret and team id. */
  newTeam(name?: string): Promise<{ key: string; teamId: string; keyId: string }>;
  /** Shorthand for `app.request` with an API key and a JSON body. */
  request(
    method: string,
    path: string,
    options?: { key?: string; json?: unknown; headers?: Record<string, string>; body?: BodyInit },
  ): Promise<Response>;
  close(): Promise<void>;
}

/** Options of `createEdgeHarness`. */
export interface EdgeHarnessOptions {
  /** A PostgreSQL URL; default: PGlite in memory. */
  databaseUrl?: string;
  /** Use the real Connect-over-fetch connector (for real agents); default: in-memory fakes. */
  realAgents?: boolean;
  config?: Partial<EdgeConfig>;
  logger?: Logger;
  /** Adds routes to the app before it serves its first request (Hono freezes its router then). */
  extendApp?: (app: App) => void;
}

const adminKeyForTests = "wrn_test_admin_key_0123456789abcdefghij";

/**
 * Builds `createApp` over PGlite in memory (or a PostgreSQL URL) with fake or real agents. Create one
 * per test file (PGlite's cold start costs seconds) and isolate tests by team.
 */
export async function createEdgeHarness(options: EdgeHarnessOptions = {}): Promise<EdgeHarness> {
  const database = await openNodeDatabase(
    options.databaseUrl ? { databaseUrl: options.databaseUrl } : { pgliteDataDir: "memory://" },
  );
  const fakes = options.realAgents ? undefined : new FakeAgentConnector();
  const deps = await createServiceDeps({
    encryptionKey: testEncryptionKey,
    config: { maxUploadBytes: 1024 ** 3, maxJsonBytes: 1024 ** 2, ...options.config },
    logger: options.logger ?? noopLogger,
    ...(fakes ? { agents: fakes } : {}),
  });
  const { secrets, agents, config } = deps;
  const services = (): ServiceContext => serviceContext(deps, { db: database.db, requestId: "test" });
  await ensureAdminKey(services(), adminKeyForTests);
  const appDeps = (edgeConfig: EdgeConfig = config): AppDeps => ({
    ...deps,
    config: edgeConfig,
    database: () => ({ db: database.db, close: async () => {} }),
    docsAssets: nodeDocsAssets(),
  });
  const app = createApp(appDeps());
  options.extendApp?.(app);
  const adminPrincipal = await verifyApiKey(services(), adminKeyForTests);
  const harness: EdgeHarness = {
    app,
    database,
    secrets,
    agents,
    adminKey: adminKeyForTests,
    config,
    services,
    appDeps,
    async newTeam(name = `team-${Math.random().toString(36).slice(2, 8)}`) {
      const ctx = teamContext(services(), adminPrincipal);
      const created = await createApiKey(ctx, { name: `${name} key`, newTeamName: name });
      return { key: created.secret, teamId: created.teamId, keyId: created.id };
    },
    request(method, path, opts = {}) {
      const headers: Record<string, string> = { ...opts.headers };
      if (opts.key !== undefined) headers["x-api-key"] = opts.key;
      let body: BodyInit | undefined = opts.body;
      if (opts.json !== undefined) {
        headers["content-type"] = "application/json";
        body = JSON.stringify(opts.json);
      }
      return Promise.resolve(app.request(path, { method, headers, ...(body !== undefined ? { body } : {}) }));
    },
    close: () => database.close(),
  };
  if (fakes) harness.fakes = fakes;
  return harness;
}

/** Adds a fake agent at a unique address and registers it through the API with the admin key. */
export async function addFakeHost(
  harness: EdgeHarness,
  setup?: (agent: FakeAgent) => void,
): Promise<{ agent: FakeAgent; hostId: string }> {
  if (!harness.fakes) throw new Error("the harness uses real agents");
  const agent = harness.fakes.add(
    new FakeAgent(
      `http://fake-${Math.random().toString(36).slice(2, 10)}.test:9000`,
      `host-token-${Math.random().toString(36).slice(2)}`,
    ),
  );
  setup?.(agent);
  const res = await harness.request("POST", "/v1/hosts", {
    key: harness.adminKey,
    json: { address: agent.address, token: agent.token },
  });
  if (res.status !== 201) throw new Error(`registering a fake host failed: ${res.status} ${await res.text()}`);
  const host = (await res.json()) as { id: string };
  return { agent, hostId: host.id };
}

/** Agent enums tests use to script the fake. */
export { StopReason, TimeoutAction };
