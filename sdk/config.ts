/**
 * Connection settings of the SDK. Options passed in code win; otherwise `WRENN_API_URL` and
 * `WRENN_API_KEY` are read from the environment where there is one (Node, Bun, Deno). On Workers
 * there is no process environment: pass `apiUrl` and `apiKey` from the Worker's bindings.
 * This is the SDK's only reader of the environment.
 */

/** How to reach the API. */
export interface ConnectionOptions {
  /** Base URL of the API, e.g. `http://localhost:3000`. Default: `WRENN_API_URL`, else `http://localhost:3000`. */
  apiUrl?: string;
  /** API key. Default: `WRENN_API_KEY`. */
  apiKey?: string;
  /** The `fetch` to use (tests, proxies, a Worker's service binding). Default: the global `fetch`. */
  fetch?: typeof fetch;
  /**
   * Sends the calls whose answer is read whole (everything but streams and file transfers) instead
   * of `fetch`. The CLI passes one built on `node:http`: on Node 20 the global `fetch` loads undici
   * first, a fifth of a short command's start-up. Default: `fetch`.
   */
  transport?: Transport;
  /** Deadline of ordinary (non-streaming) requests, in milliseconds. Default 300 000 (creating a VM may be slow). */
  requestTimeoutMs?: number;
}

/** Settings after defaults are applied. */
export interface ResolvedConnection {
  apiUrl: string;
  apiKey: string | undefined;
  fetch: typeof fetch;
  transport: Transport | undefined;
  requestTimeoutMs: number;
}

/** One request of a `Transport`: its body, when there is one, is already text (JSON). */
export interface TransportRequest {
  method: string;
  url: URL;
  headers: Record<string, string>;
  body?: string;
  /** Aborting it must reject the call with the signal's reason (a timeout's is a `TimeoutError`). */
  signal?: AbortSignal;
}

/** An answer as the SDK reads it when it reads it whole; a `Response` is one. Redirects are not followed. */
export interface TransportAnswer {
  readonly status: number;
  readonly statusText: string;
  readonly headers: { get(name: string): string | null };
  text(): Promise<string>;
}

/** Sends one request; rejects only when no answer arrived (the SDK reports a non-2xx answer itself). */
export type Transport = (request: TransportRequest) => Promise<TransportAnswer>;

/** The default API address: what `npm start` serves. */
export const defaultApiUrl = "http://localhost:3000";

function environment(): Record<string, string | undefined> {
  // `process` exists on Node and in Workers with nodejs_compat; read it without importing node:*.
  const proc = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  return proc?.env ?? {};
}

/** Applies defaults (options, then environment, then built-ins). */
export function resolveConnection(options: ConnectionOptions = {}): ResolvedConnection {
  const env = environment();
  const apiUrl = (options.apiUrl ?? env.WRENN_API_URL ?? defaultApiUrl).replace(/\/+$/, "");
  return {
    apiUrl,
    apiKey: options.apiKey ?? (env.WRENN_API_KEY || undefined),
    // Bound so that runtimes which check `this` (Workers) accept the call.
    fetch: options.fetch ?? ((input, init) => globalThis.fetch(input, init)),
    transport: options.transport,
    requestTimeoutMs: options.requestTimeoutMs ?? 300_000,
  };
}
