import { CodeInterpreter, type Execution, type RunCodeOptions } from "./code.js";
import { Commands } from "./commands.js";
import type { ConnectionOptions } from "./config.js";
import { WrennError } from "./errors.js";
import { Files } from "./files.js";
import { ApiClient, segment } from "./http.js";
import type {
  ConnectionInfo,
  ConnectionPageInfo,
  CreatedSandboxInfo,
  CreateSandboxRequest,
  ForkAnswerInfo,
  ForkRequest,
  SandboxInfo,
  SandboxPageInfo,
  SandboxState,
  SnapshotInfo,
  SnapshotPageInfo,
  TimeoutRequest,
  UpdateNetworkRequest,
} from "./types.js";

/** Options of `Sandbox.create`: connection settings plus the sandbox's own. */
export interface SandboxCreateOptions extends ConnectionOptions, CreateSandboxRequest {}

/** Options of `Sandbox.metrics`: the range (a Date, or unix seconds), both ends included. */
export interface SandboxMetricsOptions {
  start?: Date | number;
  end?: Date | number;
}

/** One resource sample (`Sandbox.metrics`). */
export interface SandboxMetricInfo {
  /** RFC 3339. */
  timestamp: string;
  timestampUnix: number;
  cpuCount: number;
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  memCache: number;
  diskUsed: number;
  diskTotal: number;
}

/** Options of `Sandbox.logs`. */
export interface SandboxLogsOptions {
  /** A Date or milliseconds since the epoch: forward reads from it, backward up to it. */
  cursor?: Date | number;
  /** 1–1000 (default 1000). */
  limit?: number;
  direction?: "forward" | "backward";
  /** The lowest level returned. */
  level?: "debug" | "info" | "warn" | "error";
  /** Case-sensitive substring of the message. */
  search?: string;
}

/** One entry of a sandbox's log (`Sandbox.logs`). */
export interface SandboxLogEntryInfo {
  timestamp: string;
  level: "debug" | "info" | "warn" | "error";
  message: string;
  /** e.g. event (process_start, process_end, sandbox_created…), pid, cmd, exit_code. */
  fields: Record<string, string>;
}

/** Options of `Sandbox.list`. */
export interface SandboxListOptions extends ConnectionOptions {
  /** States to include; default every state but stopped and error. */
  states?: SandboxState[];
  /** Every pair must match. */
  metadata?: Record<string, string>;
  /** Page size (default 100). */
  limit?: number;
}

/** Options of `Sandbox.listSnapshots`. */
export interface SnapshotListOptions extends ConnectionOptions {
  /** Only snapshots of this sandbox. */
  sandboxId?: string;
  /** Only the snapshot with this name (or id). */
  name?: string;
  /** States to include; default `ready`. */
  states?: SnapshotInfo["state"][];
  /** Page size (default 100). */
  limit?: number;
}

/** Filters of `sandbox.connections()` and `sandbox.watchConnections()`. */
export interface ConnectionFilter {
  /** Only allowed or only denied attempts. */
  verdict?: "allowed" | "denied";
  /** Only TCP connections, UDP flows or DNS questions. */
  protocol?: "tcp" | "udp" | "dns";
  /** Only entries after this seq (a previous page's `nextAfter`, or the last seq seen). */
  after?: number;
}

/** Options of `sandbox.connections()`: one page of the log. */
export interface ConnectionListOptions extends ConnectionFilter {
  /** Only entries at or after this time. */
  since?: Date | string;
  /** Page size, 1 to 1,000 (default 100). */
  limit?: number;
}

/** Options of `sandbox.watchConnections()`. */
export interface ConnectionWatchOptions extends ConnectionFilter {
  /** Stops following (the iterator ends). */
  signal?: AbortSignal;
}

/** Splits a byte stream into lines (the NDJSON of /connections/stream). */
async function* readLines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let buffered = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let newline = buffered.indexOf("\n");
      while (newline >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line) yield line;
        newline = buffered.indexOf("\n");
      }
    }
    const rest = (buffered + decoder.decode()).trim();
    if (rest) yield rest;
  } finally {
    reader.releaseLock();
  }
}

/**
 * A sandbox: a disposable Linux machine. Create one with `Sandbox.create()`, reach an existing one
 * with `Sandbox.connect(id)`, run commands with `sandbox.commands`, move files with `sandbox.files`.
 *
 * ```ts
 * const sandbox = await Sandbox.create({ apiKey });
 * const { stdout } = await sandbox.commands.run("echo hello");
 * await sandbox.kill();
 * ```
 */
export class Sandbox {
  /** The sandbox id (20 characters of [a-z0-9]). */
  readonly id: string;
  /** Runs commands in the sandbox. */
  readonly commands: Commands;
  /** Moves files in and out of the sandbox. */
  readonly files: Files;
  /** Runs code in a `code-interpreter` sandbox's kernels (contexts); see also `runCode`. */
  readonly code: CodeInterpreter;
  /** envd's access token; known only to the caller that created the sandbox. */
  readonly envdAccessToken: string | undefined;
  private latest: SandboxInfo;

  private constructor(
    private readonly api: ApiClient,
    info: SandboxInfo,
    envdAccessToken?: string,
  ) {
    this.id = info.id;
    this.latest = info;
    this.envdAccessToken = envdAccessToken;
    this.commands = new Commands(api, info.id);
    this.files = new Files(api, info.id);
    this.code = new CodeInterpreter(api, info.id, envdAccessToken);
  }

  /** Creates a sandbox and waits until it runs. */
  static async create(options: SandboxCreateOptions = {}): Promise<Sandbox> {
    const { apiUrl, apiKey, fetch, transport, requestTimeoutMs, ...request } = options;
    const api = new ApiClient({ apiUrl, apiKey, fetch, transport, requestTimeoutMs });
    const created = await api.json<CreatedSandboxInfo>("POST", "/v1/sandboxes", { json: request });
    const { envdAccessToken, ...info } = created;
    return new Sandbox(api, info, envdAccessToken);
  }

  /** A handle on an existing sandbox (it is looked up, not resumed). */
  static async connect(sandboxId: string, options: ConnectionOptions = {}): Promise<Sandbox> {
    const api = new ApiClient(options);
    return new Sandbox(api, await api.json<SandboxInfo>("GET", `/v1/sandboxes/${segment(sandboxId)}`));
  }

  /** Lists sandboxes of the key's team, newest first, following pages. */
  static async list(options: SandboxListOptions = {}): Promise<SandboxInfo[]> {
    const { states, metadata, limit, ...connection } = options;
    const api = new ApiClient(connection);
    const all: SandboxInfo[] = [];
    let nextToken: string | undefined;
    do {
      const page: SandboxPageInfo = await api.json<SandboxPageInfo>("GET", "/v1/sandboxes", {
        query: {
          state: states?.join(","),
          metadata: metadata ? new URLSearchParams(metadata).toString() : undefined,
          limit: limit === undefined ? undefined : String(limit),
          nextToken,
        },
      });
      all.push(...page.sandboxes);
      nextToken = page.nextToken ?? undefined;
    } while (nextToken && (limit === undefined || all.length < limit));
    return all;
  }

  /** The sandbox as last seen by this handle. */
  get info(): SandboxInfo {
    return this.latest;
  }

  /** Fetches the sandbox's current state. */
  async getInfo(): Promise<SandboxInfo> {
    this.latest = await this.api.json<SandboxInfo>("GET", `/v1/sandboxes/${segment(this.id)}`);
    return this.latest;
  }

  /** Whether the sandbox is running now. */
  async isRunning(): Promise<boolean> {
    return (await this.getInfo()).state === "running";
  }

  /**
   * Pauses the sandbox (its memory and files are kept); paused time does not count against the
   * timeout. With `keepMemory: false` only its files are kept: its processes end and resume boots it
   * afresh (namespace and gVisor hosts; others refuse).
   */
  async pause(options: { keepMemory?: boolean } = {}): Promise<SandboxInfo> {
    this.latest = await this.api.json<SandboxInfo>("POST", `/v1/sandboxes/${segment(this.id)}/pause`, {
      json: options,
    });
    return this.latest;
  }

  /** Resumes a paused sandbox; without `timeoutSec` it gets back the time it had left. */
  async resume(options: { timeoutSec?: number } = {}): Promise<SandboxInfo> {
    this.latest = await this.api.json<SandboxInfo>("POST", `/v1/sandboxes/${segment(this.id)}/resume`, {
      json: options,
    });
    return this.latest;
  }

  /**
   * Sets the timeout to `timeoutSec` seconds from now (0 removes it), optionally changing what
   * happens then (`kill` or `pause`, with or without memory). Note: seconds, as everywhere in Wrenn's API.
   */
  async setTimeout(
    timeoutSec: number,
    options: { onTimeout?: "kill" | "pause"; keepMemory?: boolean } = {},
  ): Promise<SandboxInfo> {
    const json: TimeoutRequest = { timeoutSec };
    if (options.onTimeout) json.onTimeout = options.onTimeout;
    if (options.keepMemory !== undefined) json.keepMemory = options.keepMemory;
    this.latest = await this.api.json<SandboxInfo>("POST", `/v1/sandboxes/${segment(this.id)}/timeout`, { json });
    return this.latest;
  }

  /**
   * Replaces the sandbox's egress rules while it runs: `allowOut` and `denyOut` (addresses, CIDRs,
   * domains, `*.domain`; allowOut wins over denyOut) replace the current lists whole, and
   * `internetAccess`, when given, sets the switch that decides what no rule names. New connections
   * follow within a second. See docs/egress.md.
   */
  async updateNetwork(policy: UpdateNetworkRequest): Promise<SandboxInfo> {
    this.latest = await this.api.json<SandboxInfo>("PUT", `/v1/sandboxes/${segment(this.id)}/network`, {
      json: policy,
    });
    return this.latest;
  }

  /**
   * One page of the sandbox's connection log (oldest first): every outbound connection attempt and
   * DNS question with its verdict, the deciding rule and bytes each way. Readable after the sandbox
   * stopped (its host keeps the log for 24 hours). Pass `nextAfter` as `after` for the next page.
   */
  async connections(options: ConnectionListOptions = {}): Promise<ConnectionPageInfo> {
    const since = options.since instanceof Date ? options.since.toISOString() : options.since;
    return this.api.json<ConnectionPageInfo>("GET", `/v1/sandboxes/${segment(this.id)}/connections`, {
      query: {
        verdict: options.verdict,
        protocol: options.protocol,
        after: options.after === undefined ? undefined : String(options.after),
        since,
        limit: options.limit === undefined ? undefined : String(options.limit),
      },
    });
  }

  /**
   * Follows the connection log: the entries after `after` (default: from the start of the kept log),
   * then each new one as it happens, until `signal` aborts or the loop is left. An entry comes again
   * when its connection ends (same `seq`, with bytes and `endedAt`).
   */
  async *watchConnections(options: ConnectionWatchOptions = {}): AsyncGenerator<ConnectionInfo> {
    const controller = new AbortController();
    const onAbort = () => controller.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const res = await this.api.raw("GET", `/v1/sandboxes/${segment(this.id)}/connections/stream`, {
        query: {
          verdict: options.verdict,
          protocol: options.protocol,
          after: options.after === undefined ? undefined : String(options.after),
        },
        headers: { accept: "application/x-ndjson" },
        signal: controller.signal,
        timeoutMs: 0,
      });
      if (!res.body) throw new WrennError("BAD_RESPONSE", "connection stream: the answer has no body");
      for await (const line of readLines(res.body)) {
        let parsed: unknown;
        try {
          parsed = JSON.parse(line);
        } catch (err) {
          throw new WrennError("BAD_RESPONSE", `connection stream: a line is not JSON: ${line.slice(0, 200)}`, {
            cause: err,
          });
        }
        const failure = (parsed as { error?: { code?: unknown; message?: unknown } }).error;
        if (failure) {
          throw new WrennError(
            typeof failure.code === "string" ? failure.code : "AGENT_ERROR",
            typeof failure.message === "string" ? failure.message : "the connection stream failed",
          );
        }
        yield parsed as ConnectionInfo;
      }
    } catch (err) {
      // Leaving on the caller's abort is the normal end of a follow.
      if (options.signal?.aborted) return;
      throw err;
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
      controller.abort();
    }
  }

  /**
   * Runs code in the sandbox's code interpreter (template `code-interpreter`) and returns its output,
   * results (text, HTML, PNG, chart data…) and error. `sandbox.code` has contexts.
   */
  runCode(code: string, options?: RunCodeOptions): Promise<Execution> {
    return this.code.runCode(code, options);
  }

  /**
   * The sandbox's CPU, memory and disk samples in [start, end] (default: from its creation to now),
   * oldest first: one every few seconds for the last 24 hours, 1-minute averages for 7 days before.
   * Readable after the sandbox stopped. See docs/metrics-and-logs.md.
   */
  async metrics(options: SandboxMetricsOptions = {}): Promise<SandboxMetricInfo[]> {
    const seconds = (t: Date | number | undefined) =>
      t === undefined ? undefined : String(t instanceof Date ? Math.floor(t.getTime() / 1000) : t);
    const answer = await this.api.json<{ metrics: SandboxMetricInfo[] }>(
      "GET",
      `/v1/sandboxes/${segment(this.id)}/metrics`,
      { query: { start: seconds(options.start), end: seconds(options.end) } },
    );
    return answer.metrics;
  }

  /**
   * The sandbox's log: each process started in it and its end with the exit code, and its lifecycle
   * (created, paused, resumed, timeout, killed), by time. Readable for 7 days, also after it stopped.
   */
  async logs(options: SandboxLogsOptions = {}): Promise<SandboxLogEntryInfo[]> {
    const cursor = options.cursor instanceof Date ? options.cursor.getTime() : options.cursor;
    const answer = await this.api.json<{ logs: SandboxLogEntryInfo[] }>(
      "GET",
      `/v1/sandboxes/${segment(this.id)}/logs`,
      {
        query: {
          cursor: cursor === undefined ? undefined : String(cursor),
          limit: options.limit === undefined ? undefined : String(options.limit),
          direction: options.direction,
          level: options.level,
          search: options.search,
        },
      },
    );
    return answer.logs;
  }

  /**
   * Takes a snapshot of the sandbox (it runs on; a paused one stays paused). `Sandbox.create({
   * snapshotId })` starts new sandboxes from it, on the host that holds it. `keepsMemory` in the
   * answer says whether they resume its processes or start fresh on its files (namespace runtime).
   */
  async createSnapshot(options: { name?: string } = {}): Promise<SnapshotInfo> {
    return this.api.json<SnapshotInfo>("POST", `/v1/sandboxes/${segment(this.id)}/snapshots`, { json: options });
  }

  /** Lists the key's team's snapshots, newest first, following pages. */
  static async listSnapshots(options: SnapshotListOptions = {}): Promise<SnapshotInfo[]> {
    const { sandboxId, name, states, limit, ...connection } = options;
    const api = new ApiClient(connection);
    const all: SnapshotInfo[] = [];
    let nextToken: string | undefined;
    do {
      const page: SnapshotPageInfo = await api.json<SnapshotPageInfo>("GET", "/v1/snapshots", {
        query: {
          sandboxId,
          name,
          state: states?.join(","),
          limit: limit === undefined ? undefined : String(limit),
          nextToken,
        },
      });
      all.push(...page.snapshots);
      nextToken = page.nextToken ?? undefined;
    } while (nextToken && (limit === undefined || all.length < limit));
    return all;
  }

  /** One snapshot of the key's team (any state, `deleted` included). */
  static async getSnapshot(snapshotId: string, options: ConnectionOptions = {}): Promise<SnapshotInfo> {
    return new ApiClient(options).json<SnapshotInfo>("GET", `/v1/snapshots/${segment(snapshotId)}`);
  }

  /** Deletes a snapshot; sandboxes started from it keep running. Deleting it again is NOT_FOUND. */
  static async deleteSnapshot(snapshotId: string, options: ConnectionOptions = {}): Promise<void> {
    await new ApiClient(options).empty("DELETE", `/v1/snapshots/${segment(snapshotId)}`);
  }

  /**
   * Forks the sandbox: one snapshot, then `count` (1–10, default 1) new sandboxes from it, each with
   * `timeoutSec` (default 300). Each fork succeeds or fails on its own: the answer holds a Sandbox or
   * a WrennError per fork, in order.
   */
  async fork(options: ForkRequest = {}): Promise<Array<Sandbox | WrennError>> {
    const answer = await this.api.json<ForkAnswerInfo>("POST", `/v1/sandboxes/${segment(this.id)}/fork`, {
      json: options,
    });
    return answer.forks.map((result) => {
      if (result.sandbox) {
        const { envdAccessToken, ...info } = result.sandbox;
        return new Sandbox(this.api, info, envdAccessToken);
      }
      const error = result.error;
      return new WrennError(error?.code ?? "AGENT_ERROR", error?.message ?? "the fork failed", {
        ...(error?.requestId ? { requestId: error.requestId } : {}),
      });
    });
  }

  /** Destroys the sandbox and everything in it. Killing a stopped sandbox does nothing. */
  async kill(): Promise<void> {
    await this.api.empty("DELETE", `/v1/sandboxes/${segment(this.id)}`);
  }
}
