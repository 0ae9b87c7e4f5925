import { type ConnectionOptions, type ResolvedConnection, resolveConnection } from "./config.js";
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

/**
 * The one place the SDK talks HTTP: adds the API key, applies the deadline, and turns failures into
 * `WrennError`s. Uses only `fetch`, so it runs on Node and on Workers.
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
    const init: RequestInit & { duplex?: "half" } = { method, headers, redirect: "manual" };
    if (body !== undefined) init.body = body;
    if (body instanceof ReadableStream) init.duplex = "half";
    if (signals.length > 0) init.signal = signals.length === 1 ? signals[0] : AbortSignal.any(signals);
    let res: Response;
    try {
      res = await this.connection.fetch(url, init);
    } catch (err) {
      if (options.signal?.aborted) throw options.signal.reason ?? err;
      if (err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError")) {
        throw new WrennError(
          "TIMEOUT",
          `${method} ${path}: no answer from ${this.connection.apiUrl} in ${timeoutMs} ms`,
          {
            cause: err,
          },
        );
      }
      throw new WrennError("NETWORK_ERROR", `cannot reach the Wrenn API at ${this.connection.apiUrl}`, { cause: err });
    }
    if (!res.ok) throw await errorFromResponse(res, `${method} ${path}`);
    return res;
  }

  /** Sends a request and parses its JSON answer. */
  async json<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const res = await this.raw(method, path, options);
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
    const res = await this.raw(method, path, options);
    await res.body?.cancel();
  }
}

/** Encodes one path segment (an id). */
export function segment(value: string): string {
  return encodeURIComponent(value);
}
