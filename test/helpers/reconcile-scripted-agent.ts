import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  HostAgentService,
  type Reap,
  ReapSchema,
  Runtime,
  type Sandbox,
  SandboxSchema,
  SandboxState,
  StopReason,
  TimeoutAction,
} from "../../proto/gen/hostagent/v1/hostagent_pb.js";

/** Fields a scripted sandbox may set; the rest get running defaults. */
export interface ScriptedSandbox {
  id: string;
  state?: SandboxState;
  createdAt?: Date;
  endAt?: Date;
  timeoutAction?: TimeoutAction;
  error?: string;
}

/**
 * A real HostAgentService over HTTP on loopback (connect-node), whose sandboxes are whatever the
 * test puts in `sandboxes` — no processes behind them. It is the protocol boundary of the reconcile
 * sweep: the edge reaches it through the production connect-web client, with bearer token, timeouts
 * and real connection failures when it is stopped.
 */
export class ScriptedAgent {
  readonly token = `scripted-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
  readonly sandboxes = new Map<string, Sandbox>();
  /** Reported in every ListSandboxes until AcknowledgeReaped names them, as the agent's TTL reaper does. */
  reaped: Reap[] = [];
  /** Reap ids the edge acknowledged, in order. */
  readonly acknowledged: string[] = [];
  #reapSeq = 0;
  /** Every call as `method sandboxId`. */
  readonly calls: string[] = [];
  /** Milliseconds ListSandboxes waits before answering (to test per-host deadlines). */
  listDelayMs = 0;
  /**
   * Milliseconds pause and destroy wait after changing the sandbox and before answering, as a real
   * agent does while it tears down: meanwhile ListSandboxes already shows the new state.
   */
  actionDelayMs = 0;
  /** Methods that answer this code instead of working. */
  readonly failing = new Map<string, Code>();
  /** Runs as a PauseSandbox arrives, before it acts (a test plays the host's own timer pausing first). */
  beforePause: ((sandboxId: string) => void) | undefined;
  /** `keep_memory` of the last PauseSandbox (unset: keep memory). */
  lastPauseKeepMemory: boolean | undefined;
  private server: Server | undefined;
  private portNumber = 0;

  /** Base URL, e.g. `http://127.0.0.1:40123`. */
  get url(): string {
    return `http://127.0.0.1:${this.portNumber}`;
  }

  /** Adds a sandbox as the host would report it. */
  put(spec: ScriptedSandbox): Sandbox {
    const sandbox = create(SandboxSchema, {
      sandboxId: spec.id,
      template: "minimal",
      state: spec.state ?? SandboxState.RUNNING,
      vcpus: 1,
      memoryMb: 256,
      createdAt: timestampFromDate(spec.createdAt ?? new Date()),
      timeoutAction: spec.timeoutAction ?? TimeoutAction.KILL,
      runtime: Runtime.NAMESPACE,
      error: spec.error ?? "",
      ...(spec.endAt ? { endAt: timestampFromDate(spec.endAt) } : {}),
    });
    this.sandboxes.set(spec.id, sandbox);
    return sandbox;
  }

  /** Removes a sandbox as the TTL reaper would, reporting it with `reason` until acknowledged. */
  reap(id: string, reason: StopReason = StopReason.TIMEOUT): Reap {
    const sandbox = this.sandboxes.get(id);
    if (!sandbox) throw new Error(`no scripted sandbox ${id}`);
    this.sandboxes.delete(id);
    this.#reapSeq++;
    const reap = create(ReapSchema, {
      reapId: `reap_${String(this.#reapSeq).padStart(16, "0")}`,
      reapedAt: timestampFromDate(new Date()),
      sandbox: { ...sandbox, state: SandboxState.STOPPED, stopReason: reason },
    });
    this.reaped.push(reap);
    return reap;
  }

  private check(method: string, id: string, authorization: string | null): void {
    this.calls.push(`${method} ${id}`.trim());
    if (authorization !== `Bearer ${this.token}`) throw new ConnectError("bad host token", Code.Unauthenticated);
    const code = this.failing.get(method);
    if (code !== undefined) throw new ConnectError(`scripted ${Code[code]}`, code);
  }

  private async actionDelay(): Promise<void> {
    if (this.actionDelayMs > 0) await new Promise((r) => setTimeout(r, this.actionDelayMs));
  }

  private routes = (router: ConnectRouter): void => {
    const auth = (ctx: { requestHeader: Headers }) => ctx.requestHeader.get("authorization");
    const get = (id: string) => {
      const sandbox = this.sandboxes.get(id);
      if (!sandbox) throw new ConnectError(`sandbox ${id} not found`, Code.NotFound);
      return sandbox;
    };
    router.service(HostAgentService, {
      listSandboxes: async (_req, ctx) => {
        this.check("listSandboxes", "", auth(ctx));
        if (this.listDelayMs > 0) await new Promise((r) => setTimeout(r, this.listDelayMs));
        return { sandboxes: [...this.sandboxes.values()], reaps: [...this.reaped] };
      },
      acknowledgeReaped: async (req, ctx) => {
        this.check("acknowledgeReaped", "", auth(ctx));
        const drop = new Set(req.reapIds);
        const before = this.reaped.length;
        this.reaped = this.reaped.filter((r) => !drop.has(r.reapId));
        this.acknowledged.push(...req.reapIds);
        return { removed: before - this.reaped.length };
      },
      getHostInfo: async (_req, ctx) => {
        this.check("getHostInfo", "", auth(ctx));
        return {
          runtime: Runtime.NAMESPACE,
          availableRuntimes: [Runtime.NAMESPACE],
          capacity: { vcpus: 64, memoryMb: 262_144, maxSandboxes: 5_000 },
          load: { sandboxes: this.sandboxes.size },
          agentVersion: "scripted-1",
          envdVersion: "0.0.0",
          templates: ["minimal"],
          pauseToDisk: false,
          hostname: "scripted",
          arch: "x86_64",
        };
      },
      createSandbox: async (req, ctx) => {
        this.check("createSandbox", req.sandboxId, auth(ctx));
        const existing = this.sandboxes.get(req.sandboxId);
        if (existing) return { sandbox: existing };
        const endAt = req.timeoutSec > 0 ? new Date(Date.now() + req.timeoutSec * 1000) : undefined;
        return {
          sandbox: this.put({ id: req.sandboxId, timeoutAction: req.timeoutAction, ...(endAt ? { endAt } : {}) }),
        };
      },
      destroySandbox: async (req, ctx) => {
        this.check("destroySandbox", req.sandboxId, auth(ctx));
        get(req.sandboxId);
        this.sandboxes.delete(req.sandboxId);
        await this.actionDelay();
        return {};
      },
      pauseSandbox: async (req, ctx) => {
        this.check("pauseSandbox", req.sandboxId, auth(ctx));
        this.beforePause?.(req.sandboxId);
        this.lastPauseKeepMemory = req.keepMemory;
        const sandbox = get(req.sandboxId);
        if (sandbox.state === SandboxState.PAUSED) throw new ConnectError("already paused", Code.FailedPrecondition);
        sandbox.state = SandboxState.PAUSED;
        sandbox.pausedWithoutMemory = req.keepMemory === false;
        sandbox.endAt = undefined;
        await this.actionDelay();
        return { sandbox };
      },
      resumeSandbox: async (req, ctx) => {
        this.check("resumeSandbox", req.sandboxId, auth(ctx));
        const sandbox = get(req.sandboxId);
        if (sandbox.state !== SandboxState.PAUSED) throw new ConnectError("not paused", Code.FailedPrecondition);
        sandbox.state = SandboxState.RUNNING;
        sandbox.endAt = timestampFromDate(new Date(Date.now() + (req.timeoutSec ?? 300) * 1000));
        return { sandbox };
      },
      getSandbox: async (req, ctx) => {
        this.check("getSandbox", req.sandboxId, auth(ctx));
        return { sandbox: get(req.sandboxId) };
      },
    });
  };

  /** Starts listening (on the same port as before, after a `stop`). */
  async start(): Promise<void> {
    const handler = connectNodeAdapter({ routes: this.routes });
    const server = createServer(handler);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.portNumber, "127.0.0.1", () => resolve());
    });
    this.portNumber = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Stops listening and drops open connections: callers now get connection refused. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** Starts a scripted agent on a random loopback port. */
export async function startScriptedAgent(): Promise<ScriptedAgent> {
  const agent = new ScriptedAgent();
  await agent.start();
  return agent;
}
