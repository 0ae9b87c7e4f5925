import { type Client, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { Tracer } from "@opentelemetry/api";
import { currentRequestId, REQUEST_ID_HEADER } from "../lib/request-context.js";
import { Filesystem } from "../proto/gen/envd/filesystem/filesystem_pb.js";
import { Process } from "../proto/gen/envd/process/process_pb.js";
import { AgentError } from "./errors.js";
import { activeTraceHeaders, envdTracingInterceptor, noopTracer } from "./tracing.js";

/** envd's port inside every guest. */
export const ENVD_PORT = 49983;

/**
 * The largest Connect message the agent accepts from envd. envd sends process output in pipe-sized
 * chunks and directory listings of at most a few MiB; Connect's default (4 GiB) would let a guest
 * (root can replace envd) make the agent buffer whatever it declares. A larger message fails the call
 * with RESOURCE_EXHAUSTED before its body is read.
 */
export const ENVD_READ_MAX_BYTES = 16 * 1024 * 1024;

/** How much of an envd error answer becomes the error message; the rest is never read. */
const ENVD_MESSAGE_MAX_BYTES = 4096;

/** The first `maxBytes` of a body as text; the rest of the transfer is cancelled, not drained. */
async function readPrefix(res: Response, maxBytes: number): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  try {
    while (total < maxBytes) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value.subarray(0, maxBytes - total));
      total += Math.min(value.length, maxBytes - total);
    }
  } catch {
    // A body that broke off: what arrived is the message.
  } finally {
    reader.cancel().catch(() => {});
  }
  return Buffer.concat(parts).toString("utf8");
}

/** Passes the edge's request id on to envd, so that envd's log lines for this call carry it too. */
function passRequestId(headers: Headers): void {
  const requestId = currentRequestId();
  if (requestId !== undefined) headers.set(REQUEST_ID_HEADER, requestId);
}

/** The sandbox user that processes and files belong to unless a call names another. */
export const DEFAULT_USER = "user";
export const DEFAULT_WORKDIR = "/home/user";

/**
 * The agent's view of one guest's envd, reached at the slot address: HTTP for /health, /init and
 * /files, generated Connect clients for the Process and Filesystem services. envd chooses the Linux
 * user from `Authorization: Basic <user>:` and checks `X-Access-Token`.
 */
export class EnvdClient {
  readonly baseUrl: string;
  readonly #accessToken: string;
  readonly process: Client<typeof Process>;
  readonly filesystem: Client<typeof Filesystem>;

  /**
   * `port` is envd's fixed port but for tests, which stand a fake envd up on a free one. `tracer`
   * records a `wrenn-envd` span per Connect call (agent/tracing.ts); the no-op one still passes the
   * active `traceparent` on.
   */
  constructor(address: string, accessToken: string, port = ENVD_PORT, tracer: Tracer = noopTracer) {
    this.baseUrl = `http://${address}:${port}`;
    this.#accessToken = accessToken;
    const headers: Interceptor = (next) => async (req) => {
      if (accessToken !== "") req.header.set("x-access-token", accessToken);
      passRequestId(req.header);
      const user = req.header.get("x-wrenn-user") ?? DEFAULT_USER;
      req.header.delete("x-wrenn-user");
      req.header.set("authorization", `Basic ${Buffer.from(`${user}:`).toString("base64")}`);
      return next(req);
    };
    const transport = createConnectTransport({
      baseUrl: this.baseUrl,
      httpVersion: "1.1",
      useBinaryFormat: true,
      // envd is on this host (a veth or vsock away): compression only costs CPU on both ends. With
      // Connect's default (accept gzip), envd gzipped every output chunk of a Process stream and the
      // agent inflated it again, the largest part of a 16 MiB exec's time (issue 23).
      acceptCompression: [],
      readMaxBytes: ENVD_READ_MAX_BYTES,
      interceptors: [envdTracingInterceptor(tracer), headers],
    });
    this.process = createClient(Process, transport);
    this.filesystem = createClient(Filesystem, transport);
  }

  /** Headers that make a Connect call run as `user` (empty: the default user). */
  static asUser(user: string): { headers: Record<string, string> } {
    return { headers: { "x-wrenn-user": user === "" ? DEFAULT_USER : user } };
  }

  #headers(extra: Record<string, string> = {}): Record<string, string> {
    const requestId = currentRequestId();
    const traced = { ...extra, ...activeTraceHeaders() };
    const withId = requestId === undefined ? traced : { ...traced, [REQUEST_ID_HEADER]: requestId };
    return this.#accessToken === "" ? withId : { ...withId, "x-access-token": this.#accessToken };
  }

  /** Whether envd answers /health now. */
  async healthy(signal?: AbortSignal): Promise<boolean> {
    try {
      const res = await fetch(`${this.baseUrl}/health`, { signal: signal ?? AbortSignal.timeout(1_000) });
      // The status is the answer; a body (which a guest could make endless) is not read.
      await res.body?.cancel().catch(() => {});
      return res.ok;
    } catch {
      return false;
    }
  }

  /** Polls /health until envd answers; throws UNAVAILABLE after timeoutMs. */
  async waitHealthy(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      signal?.throwIfAborted();
      if (await this.healthy(AbortSignal.timeout(Math.max(200, Math.min(2_000, deadline - Date.now()))))) return;
      // A refused connection costs well under a millisecond; polling often keeps creates fast.
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new AgentError(
      "UNAVAILABLE",
      "ENVD_NOT_READY",
      `envd at ${this.baseUrl} did not answer /health within ${timeoutMs} ms`,
    );
  }

  /** POSTs /init; returns the envd version from X-Envd-Version when present. */
  async init(body: {
    envVars: Record<string, string>;
    accessToken: string;
    defaultUser: string;
    defaultWorkdir: string;
    timestamp: string;
  }): Promise<string> {
    const res = await fetch(`${this.baseUrl}/init`, {
      method: "POST",
      headers: this.#headers({ "content-type": "application/json" }),
      body: JSON.stringify(body.accessToken === "" ? { ...body, accessToken: undefined } : body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await readPrefix(res, ENVD_MESSAGE_MAX_BYTES);
    if (!res.ok) {
      throw new AgentError(
        "UNAVAILABLE",
        "ENVD_INIT_FAILED",
        `envd /init answered ${res.status}: ${text.slice(0, 300)}`,
      );
    }
    return res.headers.get("x-envd-version") ?? "";
  }

  /** Uploads one file through /files (multipart, field "file"). */
  async writeFile(path: string, content: Uint8Array, user: string, signal?: AbortSignal): Promise<void> {
    const form = new FormData();
    form.append("file", new Blob([new Uint8Array(content)]), path);
    const url = `${this.baseUrl}/files?${new URLSearchParams({ path, username: user || DEFAULT_USER })}`;
    const res = await fetch(url, { method: "POST", headers: this.#headers(), body: form, signal });
    const text = await readPrefix(res, ENVD_MESSAGE_MAX_BYTES);
    if (!res.ok) throw filesError(res.status, text, path);
  }

  /** Opens a file for reading through /files; the caller consumes the body stream. */
  async readFile(path: string, user: string, signal?: AbortSignal): Promise<Response> {
    const url = `${this.baseUrl}/files?${new URLSearchParams({ path, username: user || DEFAULT_USER })}`;
    const res = await fetch(url, { headers: this.#headers({ "accept-encoding": "identity" }), signal });
    if (!res.ok) throw filesError(res.status, await readPrefix(res, ENVD_MESSAGE_MAX_BYTES), path);
    return res;
  }
}

function filesError(status: number, body: string, path: string): AgentError {
  let message = body.slice(0, 300);
  try {
    const parsed = JSON.parse(body) as { message?: unknown };
    if (typeof parsed.message === "string") message = parsed.message;
  } catch {
    // Not JSON: keep the text.
  }
  if (status === 404) return new AgentError("NOT_FOUND", "FILE_NOT_FOUND", message || `${path} does not exist`);
  if (status === 400) return new AgentError("INVALID_ARGUMENT", "INVALID_PATH", message);
  if (status === 401 || status === 403) return new AgentError("FAILED_PRECONDITION", "ENVD_UNAUTHORIZED", message);
  if (status === 507) return new AgentError("RESOURCE_EXHAUSTED", "DISK_FULL", message);
  return new AgentError("UNAVAILABLE", "ENVD_ERROR", `envd /files answered ${status}: ${message}`);
}

/** Passes a Connect error from envd through with its code (it already is a wire error). */
export function isConnectError(err: unknown): err is ConnectError {
  return err instanceof ConnectError;
}
