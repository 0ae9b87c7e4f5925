import {
  type ConnectionOptions,
  type ResolvedConnection,
  resolveConnection,
  type TransportAnswer,
  type TransportRequest,
} from "./config.js";
import { errorFromResponse, WrennError } from "./errors.js";

/** Options of one API call. */
export interface RequestOptions {
  /** JSON body. */
  json?: unknown;
  /** A raw body (multipart uploads); `headers` should then carry its content type. */
  body?: BodyInit;
  headers?: Record<string, string>;
  query?: Record<string, string | undefined>;
  /** Cancels the call. */
  signal?: AbortSignal;
  /** Overrides the connection's deadline; 0 means none (streams). */
  timeoutMs?: number;
}

/** A call ready to send: the parts `fetch` and a `Transport` share. */
interface PreparedCall {
  url: URL;
  headers: Record<string, string>;
  body: BodyInit | undefined;
  signal: AbortSignal | undefined;
  timeoutMs: number;
}

/**
 * The one place the SDK talks HTTP: adds the API key, applies the deadline, and turns failures into
 * `WrennError`s. Uses `fetch` (so it runs on Node and on Workers), or for calls whose answer is read
 * whole the connection's `transport` when one is given.
 */
export class ApiClient {
  readonly connection: ResolvedConnection;

  constructor(options: ConnectionOptions = {}) {
    this.connection = resolveConnection(options);
  }

  /** The base URL of the API, without a trailing slash. */
  get apiUrl(): string {
    return this.connection.apiUrl;
  }

  /** Sends a request and returns the response when it is 2xx; anything else throws a `WrennError`. */
  async raw(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const call = this.prepare(path, options);
    const init: RequestInit & { duplex?: "half" } = { method, headers: call.headers, redirect: "manual" };
    if (call.body !== undefined) init.body = call.body;
    if (call.body instanceof ReadableStream) init.duplex = "half";
    if (call.signal) init.signal = call.signal;
    let res: Response;
    try {
      res = await this.connection.fetch(call.url, init);
    } catch (err) {
      throw this.failure(err, method, path, call.timeoutMs, options.signal);
    }
    if (!res.ok) throw await errorFromResponse(res, `${method} ${path}`);
    return res;
  }

  /** Sends a request and parses its JSON answer. */
  async json<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const res = await this.whole(method, path, options);
    const text = await res.text();
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new WrennError("BAD_RESPONSE", `${method} ${path}: the answer is not JSON: ${text.slice(0, 200)}`, {
        status: res.status,
        cause: err,
      });
    }
  }

  /** Sends a request whose answer has no body (204). */
  async empty(method: string, path: string, options: RequestOptions = {}): Promise<void> {
    const res = await this.whole(method, path, options);
    // A fetch Response's body is cancelled unread; a transport's answer is drained.
    const body = (res as { body?: ReadableStream | null }).body;
    if (body) await body.cancel();
    else if (body === undefined) await res.text();
  }

  /** A 2xx answer to be read whole: through the connection's transport when there is one and the body is JSON or none. */
  private async whole(method: string, path: string, options: RequestOptions): Promise<TransportAnswer> {
    const transport = this.connection.transport;
    if (transport === undefined || options.body !== undefined) return this.raw(method, path, options);
    const call = this.prepare(path, options);
    const request: TransportRequest = { method, url: call.url, headers: call.headers };
    if (typeof call.body === "string") request.body = call.body;
    if (call.signal) request.signal = call.signal;
    let res: TransportAnswer;
    try {
      res = await transport(request);
    } catch (err) {
      throw this.failure(err, method, path, call.timeoutMs, options.signal);
    }
    if (res.status < 200 || res.status > 299) throw await errorFromResponse(res, `${method} ${path}`);
    return res;
  }

  /** The URL, headers (with the key), body and deadline of a call. */
  private prepare(path: string, options: RequestOptions): PreparedCall {
    const url = new URL(`${this.connection.apiUrl}${path}`);
    for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const headers: Record<string, string> = { accept: "application/json", ...options.headers };
    if (this.connection.apiKey) headers["x-api-key"] = this.connection.apiKey;
    let body: BodyInit | undefined = options.body;
    if (options.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    const timeoutMs = options.timeoutMs ?? this.connection.requestTimeoutMs;
    const signals = [options.signal, timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined].filter(
      (s): s is AbortSignal => s !== undefined,
    );
    const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
    return { url, headers, body, signal, timeoutMs };
  }

  /** The error to throw when no answer arrived: the caller's own abort as it is, else TIMEOUT or NETWORK_ERROR. */
  private failure(err: unknown, method: string, path: string, timeoutMs: number, signal?: AbortSignal): unknown {
    if (signal?.aborted) return signal.reason ?? err;
    if (err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError")) {
      return new WrennError(
        "TIMEOUT",
        `${method} ${path}: no answer from ${this.connection.apiUrl} in ${timeoutMs} ms`,
        {
          cause: err,
        },
      );
    }
    return new WrennError("NETWORK_ERROR", `cannot reach the Wrenn API at ${this.connection.apiUrl}`, { cause: err });
  }
}

/** Encodes one path segment (an id). */
export function segment(value: string): string {
  return encodeURIComponent(value);
}
