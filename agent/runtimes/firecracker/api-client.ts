import { stat } from "node:fs/promises";
import { request } from "node:http";
import { connect } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import type {
  BootSource,
  Drive,
  EntropyDevice,
  InstanceActionInfo,
  InstanceInfo,
  LoggerConfig,
  MachineConfiguration,
  NetworkInterface,
  SnapshotCreateParams,
  SnapshotLoadParams,
  VmState,
} from "./api-types.js";

/**
 * A request to Firecracker's API failed: either Firecracker answered with an error (status and its
 * `fault_message`), or the socket could not be reached (status undefined).
 */
export class FirecrackerApiError extends Error {
  readonly method: string;
  readonly path: string;
  /** HTTP status Firecracker answered with; undefined when no answer came. */
  readonly status: number | undefined;
  /** Firecracker's own explanation (`fault_message` of its Error body), when it gave one. */
  readonly faultMessage: string | undefined;

  constructor(opts: { method: string; path: string; status?: number; faultMessage?: string; cause?: unknown }) {
    const what = `firecracker ${opts.method} ${opts.path}`;
    const message =
      opts.status === undefined
        ? `${what}: no answer (${opts.cause instanceof Error ? opts.cause.message : String(opts.cause)})`
        : `${what} failed with ${opts.status}: ${opts.faultMessage ?? "(no fault_message)"}`;
    super(message, { cause: opts.cause });
    this.name = "FirecrackerApiError";
    this.method = opts.method;
    this.path = opts.path;
    this.status = opts.status;
    this.faultMessage = opts.faultMessage;
  }
}

export interface ApiClientOptions {
  /** Bound on one request, including Firecracker's work (a full snapshot of a large guest takes seconds). */
  timeoutMs?: number;
}

interface RawResponse {
  status: number;
  body: string;
}

/**
 * A client for one Firecracker process's API over its unix socket. Each call is one HTTP/1.1 request
 * on a fresh connection: Firecracker serves one connection at a time, so keeping none open means a
 * restarted agent or a second caller is never locked out.
 */
export class FirecrackerApiClient {
  readonly socketPath: string;
  readonly #timeoutMs: number;

  constructor(socketPath: string, options: ApiClientOptions = {}) {
    this.socketPath = socketPath;
    this.#timeoutMs = options.timeoutMs ?? 60_000;
  }

  putBootSource(body: BootSource): Promise<void> {
    return this.#send("PUT", "/boot-source", body);
  }

  putDrive(body: Drive): Promise<void> {
    return this.#send("PUT", `/drives/${encodeURIComponent(body.drive_id)}`, body);
  }

  putNetworkInterface(body: NetworkInterface): Promise<void> {
    return this.#send("PUT", `/network-interfaces/${encodeURIComponent(body.iface_id)}`, body);
  }

  putMachineConfig(body: MachineConfiguration): Promise<void> {
    return this.#send("PUT", "/machine-config", body);
  }

  putLogger(body: LoggerConfig): Promise<void> {
    return this.#send("PUT", "/logger", body);
  }

  putEntropy(body: EntropyDevice): Promise<void> {
    return this.#send("PUT", "/entropy", body);
  }

  action(actionType: InstanceActionInfo["action_type"]): Promise<void> {
    const body: InstanceActionInfo = { action_type: actionType };
    return this.#send("PUT", "/actions", body);
  }

  /** `PATCH /vm`: pauses or resumes the vCPUs. Repeating the current state is accepted by Firecracker. */
  setVmState(state: VmState["state"]): Promise<void> {
    const body: VmState = { state };
    return this.#send("PATCH", "/vm", body);
  }

  createSnapshot(body: SnapshotCreateParams): Promise<void> {
    return this.#send("PUT", "/snapshot/create", body);
  }

  loadSnapshot(body: SnapshotLoadParams): Promise<void> {
    return this.#send("PUT", "/snapshot/load", body);
  }

  async describeInstance(): Promise<InstanceInfo> {
    const res = await this.#request("GET", "/", undefined);
    if (res.status !== 200) throw apiError("GET", "/", res);
    const parsed = parseInstanceInfo(res.body);
    if (parsed === undefined) {
      throw new FirecrackerApiError({
        method: "GET",
        path: "/",
        status: res.status,
        faultMessage: `unexpected instance info: ${res.body.slice(0, 200)}`,
      });
    }
    return parsed;
  }

  async #send(method: "PUT" | "PATCH", path: string, body: object): Promise<void> {
    const res = await this.#request(method, path, JSON.stringify(body));
    if (res.status !== 204 && res.status !== 200) throw apiError(method, path, res);
  }

  #request(method: string, path: string, body: string | undefined): Promise<RawResponse> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = { Accept: "application/json" };
      if (body !== undefined) {
        headers["Content-Type"] = "application/json";
        headers["Content-Length"] = Buffer.byteLength(body);
      }
      const req = request(
        { socketPath: this.socketPath, method, path, headers, timeout: this.#timeoutMs, agent: false },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
          res.on("error", (cause) => reject(new FirecrackerApiError({ method, path, cause })));
        },
      );
      req.on("timeout", () => {
        req.destroy(new Error(`no answer within ${this.#timeoutMs} ms`));
      });
      req.on("error", (cause) => reject(new FirecrackerApiError({ method, path, cause })));
      req.end(body);
    });
  }
}

function apiError(method: string, path: string, res: RawResponse): FirecrackerApiError {
  return new FirecrackerApiError({ method, path, status: res.status, faultMessage: faultMessageOf(res.body) });
}

/** Extracts `fault_message` from an Error body; falls back to the raw text so nothing Firecracker said is lost. */
export function faultMessageOf(body: string): string | undefined {
  if (body.trim() === "") return undefined;
  try {
    const parsed: unknown = JSON.parse(body);
    if (typeof parsed === "object" && parsed !== null && "fault_message" in parsed) {
      const message = parsed.fault_message;
      if (typeof message === "string") return message;
    }
  } catch {
    // Not JSON: report the text as it came.
  }
  return body.slice(0, 500);
}

const instanceStates = new Set<string>(["Not started", "Running", "Paused"]);

function parseInstanceInfo(body: string): InstanceInfo | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const record = parsed as Record<string, unknown>;
  const { app_name, id, state, vmm_version } = record;
  if (typeof app_name !== "string" || typeof id !== "string" || typeof vmm_version !== "string") return undefined;
  if (typeof state !== "string" || !instanceStates.has(state)) return undefined;
  return { app_name, id, state: state as InstanceInfo["state"], vmm_version };
}

export interface WaitForSocketOptions {
  /** Upper bound on the wait. */
  timeoutMs: number;
  /** Delay between probes. */
  intervalMs?: number;
  /** Checked on every probe so a process that died is reported at once instead of after the timeout. */
  isProcessAlive?: () => boolean | Promise<boolean>;
  signal?: AbortSignal;
}

/**
 * Waits until something accepts connections on the API socket. Firecracker creates the socket file
 * when it binds, but a connect is the only proof that it listens.
 */
export async function waitForApiSocket(socketPath: string, options: WaitForSocketOptions): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  const interval = options.intervalMs ?? 10;
  for (;;) {
    options.signal?.throwIfAborted();
    if ((await isSocket(socketPath)) && (await accepts(socketPath))) return;
    if (options.isProcessAlive !== undefined && !(await options.isProcessAlive())) {
      throw new Error(`firecracker exited before its API socket ${socketPath} appeared`);
    }
    if (Date.now() >= deadline) {
      throw new Error(`firecracker API socket ${socketPath} did not appear within ${options.timeoutMs} ms`);
    }
    await sleep(interval, undefined, options.signal ? { signal: options.signal } : undefined);
  }
}

async function isSocket(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isSocket();
  } catch {
    return false;
  }
}

function accepts(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => {
      socket.destroy();
      resolve(false);
    });
  });
}
