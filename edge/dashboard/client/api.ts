/** Calls to the edge's /v1 API from the dashboard: same origin, the session cookie, and on every
 * state-changing call the CSRF token the accounts backend requires (docs/accounts.md). */

export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The readable CSRF cookie set at sign-in; the server checks it against the session. */
export function csrfToken(): string {
  return decodeURIComponent(document.cookie.match(/(?:^|; )wrenn_csrf=([^;]+)/)?.[1] ?? "");
}

/** Fetches `path`; throws ApiFailure with the API's error code and message on a non-2xx answer. */
export async function call(method: string, path: string, body?: unknown | FormData | Blob): Promise<Response> {
  const headers: Record<string, string> = {};
  if (method !== "GET" && method !== "HEAD") headers["x-csrf-token"] = csrfToken();
  let payload: BodyInit | undefined;
  if (body instanceof FormData || body instanceof Blob) payload = body;
  else if (body !== undefined) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const res = await fetch(path, { method, headers, credentials: "same-origin", ...(payload ? { body: payload } : {}) });
  if (!res.ok) {
    let code = `HTTP_${res.status}`;
    let message = res.statusText;
    try {
      const err = (await res.json()) as { error?: { code?: string; message?: string } };
      code = err.error?.code ?? code;
      message = err.error?.message ?? message;
    } catch {}
    throw new ApiFailure(res.status, code, message);
  }
  return res;
}

/** `call` answering JSON (undefined for 204). */
export async function json<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await call(method, path, body);
  return (res.status === 204 ? undefined : await res.json()) as T;
}

export interface SessionInfo {
  user: { id: string; email: string; isInstanceAdmin?: boolean };
  teams: { id: string; name: string; role: string }[];
  currentTeamId: string | null;
  csrfToken: string;
  expiresAt: string;
}

export interface Sandbox {
  id: string;
  template: string;
  state: string;
  vcpus: number;
  memoryMb: number;
  timeoutSec: number;
  hostId: string | null;
  runtime: string;
  metadata: Record<string, string>;
  error: string | null;
  createdAt: string;
  startedAt: string | null;
  endsAt?: string | null;
}

export interface Entry {
  name: string;
  path: string;
  type: "file" | "directory" | "symlink" | "unknown";
  size: number;
  modifiedAt: string | null;
}

export interface Metric {
  timestampUnix: number;
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  diskUsed: number;
}

/** A short readable message for an error shown on the page. */
export function describe(err: unknown): string {
  if (err instanceof ApiFailure) return `${err.message} (${err.code})`;
  return err instanceof Error ? err.message : String(err);
}
