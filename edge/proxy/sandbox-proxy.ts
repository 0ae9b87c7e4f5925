import type { MiddlewareHandler } from "hono";
import type { HostTarget } from "../clients/agent.js";
import type { AppEnv } from "../context.js";
import type { ServiceContext } from "../services/context.js";
import { findSandboxBySignature, resolveSandboxTraffic } from "../services/e2b/traffic.js";
import { readTextLimited } from "../services/files/bounded-read.js";
import { maskedHost } from "../services/sandboxes/network.js";
import {
  BadUpstreamResponse,
  badSandboxRoute,
  internalRouteRefused,
  isRelayableStatus,
  portNotOpen,
  relayableStatusText,
  sandboxBadResponse,
  sandboxNotFound,
  sandboxUnavailable,
  signatureMatchesNoSandbox,
  trafficTokenRequired,
} from "./errors.js";
import { markRelayed } from "./relayed.js";
import {
  classifyTraffic,
  envdPort,
  isEnvdInternalRoute,
  normalizedPath,
  sandboxIdHeader,
  sandboxPortHeader,
  splitRequestUrl,
} from "./routing.js";

/** Header the agent's proxy turns back into `Authorization` for the guest (the real one carries its token). */
export const guestAuthorizationHeader = "wrenn-guest-authorization";
/** The Host a guest's server should see (E2B's `maskRequestHost`); the agent's proxy sets it. */
export const guestHostHeader = "wrenn-guest-host";
/** Set to "1" when the guest's port speaks TLS (E2B's `httpsPorts`); the agent's proxy then uses it. */
export const guestTlsHeader = "wrenn-guest-tls";

/** Hop-by-hop headers (RFC 9110 §7.6.1) and ones the edge sets itself; never forwarded either way. */
const hopByHop = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  "http2-settings",
]);

/** Request headers that are about routing through Wrenn, not for the guest. */
/** The header that carries a non-public sandbox's traffic access token (E2B's name). */
export const trafficTokenHeader = "e2b-traffic-access-token";

const routingOnly = new Set([
  sandboxIdHeader,
  sandboxPortHeader,
  "x-api-key",
  guestAuthorizationHeader,
  guestHostHeader,
  guestTlsHeader,
  trafficTokenHeader,
]);

/** Compares two secrets in time that depends on their length only (the proxy runs on Workers too). */
function sameSecret(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** Codings `fetch` decodes by itself: when one was applied, the body we hold is already plain. */
const decodedCodings = new Set(["gzip", "x-gzip", "deflate", "br"]);

/** Reasons the agent's proxy gives in its own error bodies (guests never produce these). */
const agentNotFoundReasons = new Set(["SANDBOX_NOT_FOUND", "SANDBOX_PAUSED", "SANDBOX_NOT_RUNNING"]);
/** Reasons an agent gives when the guest's answer was not valid HTTP (the spellings agents use). */
const agentBadResponseReasons = new Set(["SANDBOX_BAD_RESPONSE", "UPSTREAM_BAD_RESPONSE", "BAD_UPSTREAM_RESPONSE"]);

/**
 * What the client may get of the guest's response headers:
 * - `guest`: all of them but hop-by-hop ones (a `<port>-<id>.<domain>` Host: the port's own origin);
 * - `no-cookies`: the same without `Set-Cookie` (header-routed traffic, which may arrive on the API's
 *   own origin, where a guest must not set cookies);
 * - `download`: a file download served as an inert attachment (see `downloadResponseHeaders`).
 */
export type ResponsePolicy = "guest" | "no-cookies" | "download";

/** Where a sandbox request goes once resolved. */
export interface ProxyDestination {
  sandboxId: string;
  port: number;
  target: HostTarget;
  /** Path and query for the guest, e.g. `/files?path=a.txt`. */
  pathAndQuery: string;
  /** What of the guest's answer reaches the client. */
  responsePolicy: ResponsePolicy;
  /** For downloads: the file name offered to the client (the last segment of `path`). */
  downloadName?: string;
  /** The Host header the guest's server gets (E2B's `maskRequestHost`); default: its address and port. */
  guestHost?: string;
  /** The guest's port speaks TLS (E2B's `httpsPorts`). */
  guestTls?: boolean;
}

/** A request resolved to a destination, or refused with its answer. */
export type ProxyDecision =
  | { kind: "forward"; destination: ProxyDestination }
  | { kind: "refuse"; response: Response }
  | { kind: "not-sandbox-traffic" };

/**
 * Decides where a request goes: not sandbox traffic (an API call), a destination on an agent, or an
 * E2B-shaped refusal (bad routing, envd internal route, sandbox not found or unreachable). Shared by
 * the HTTP middleware and the Node WebSocket hook.
 */
export async function decideSandboxRoute(ctx: ServiceContext, request: Request): Promise<ProxyDecision> {
  const route = classifyTraffic(request);
  if (route === undefined) return { kind: "not-sandbox-traffic" };
  const requestId = ctx.requestId;
  if (route.kind === "bad") return { kind: "refuse", response: badSandboxRoute(route.message, requestId) };
  const raw = splitRequestUrl(request.url);
  const normalized = normalizedPath(raw.pathname, raw.search);
  if (normalized === undefined) {
    return { kind: "refuse", response: badSandboxRoute("invalid request path", requestId) };
  }
  const { pathname, search } = normalized;
  let sandboxId: string;
  let port: number;
  let responsePolicy: ResponsePolicy;
  if (route.kind === "signed-files") {
    const found = await findSandboxBySignature(ctx, route);
    if (found === undefined) return { kind: "refuse", response: signatureMatchesNoSandbox(requestId) };
    sandboxId = found;
    port = envdPort;
    // A signed URL is opened by browsers on the API's own origin: whatever it answers is a download.
    responsePolicy = "download";
  } else {
    sandboxId = route.sandboxId;
    port = route.port;
    responsePolicy = route.via === "headers" ? "no-cookies" : "guest";
    if (port === envdPort && pathname === "/files" && (request.method === "GET" || request.method === "HEAD")) {
      responsePolicy = "download";
    }
  }
  if (isEnvdInternalRoute(port, pathname)) {
    return { kind: "refuse", response: internalRouteRefused(pathname, requestId) };
  }
  const destination = await resolveSandboxTraffic(ctx, sandboxId);
  if (destination.kind === "not-found") return { kind: "refuse", response: sandboxNotFound(sandboxId, requestId) };
  if (destination.kind === "unavailable") {
    return { kind: "refuse", response: sandboxUnavailable(sandboxId, destination.message, requestId) };
  }
  // E2B's allowPublicTraffic: false guards the sandbox's own ports; envd has its own access token.
  if (destination.trafficToken !== null && port !== envdPort) {
    if (!sameSecret(request.headers.get(trafficTokenHeader) ?? "", destination.trafficToken)) {
      return { kind: "refuse", response: trafficTokenRequired(sandboxId, requestId) };
    }
  }
  const forward: ProxyDestination = {
    sandboxId,
    port,
    target: destination.target,
    pathAndQuery: `${pathname}${search}`,
    responsePolicy,
  };
  if (destination.maskRequestHost !== null && port !== envdPort) {
    const guestHost = maskedHost(destination.maskRequestHost, port);
    if (guestHost !== undefined) forward.guestHost = guestHost;
  }
  if (port !== envdPort && destination.httpsPorts.includes(port)) forward.guestTls = true;
  if (responsePolicy === "download") {
    const name = (new URLSearchParams(search).get("path") ?? "").split("/").pop();
    if (name) forward.downloadName = name;
  }
  return { kind: "forward", destination: forward };
}

/**
 * The headers a guest gets: the client's, minus hop-by-hop and routing headers, with `Authorization`
 * (envd's Basic user) renamed so the agent does not take it for its own bearer token, and
 * `Accept-Encoding: identity` because `fetch` would decode a compressed answer while keeping its
 * `Content-Encoding`, and the client would decode it twice. Traffic that arrives on the API's own origin
 * (header-routed or a signed download: any policy but `guest`) carries Wrenn's cookies — the dashboard's
 * session and CSRF cookies among them — so `Cookie` is dropped there: a guest never sees them.
 */
export function guestRequestHeaders(
  headers: Headers,
  guest: Partial<Pick<ProxyDestination, "guestHost" | "guestTls" | "responsePolicy">> = {},
): Record<string, string> {
  const dropCookies = guest.responsePolicy !== undefined && guest.responsePolicy !== "guest";
  const out: Record<string, string> = {};
  const connectionListed = new Set(
    (headers.get("connection") ?? "")
      .split(",")
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
  );
  headers.forEach((value, name) => {
    if (hopByHop.has(name) || routingOnly.has(name) || connectionListed.has(name)) return;
    if (dropCookies && name === "cookie") return;
    if (name === "authorization") out[guestAuthorizationHeader] = value;
    else if (name !== "accept-encoding") out[name] = value;
  });
  out["accept-encoding"] = "identity";
  if (guest.guestHost !== undefined) out[guestHostHeader] = guest.guestHost;
  if (guest.guestTls) out[guestTlsHeader] = "1";
  return out;
}

/** Guest headers a download keeps: what a client needs to resume, cache-check or size it, and CORS. */
const downloadHeaderWhitelist = new Set([
  "content-length",
  "etag",
  "last-modified",
  "access-control-allow-origin",
  "access-control-expose-headers",
  "vary",
]);

/** RFC 8187 encoding of a file name for `Content-Disposition: attachment; filename*=`. */
function attachmentDisposition(name: string | undefined): string {
  if (!name) return "attachment";
  const encoded = encodeURIComponent(name).replace(/['()*!]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename*=UTF-8''${encoded}`;
}

/**
 * The headers of a download the guest answered: only whitelisted guest headers survive, and the body
 * is declared inert bytes (never HTML or script the browser would run on the API's origin, whatever
 * the guest, or a root process that replaced envd, claims it is).
 */
export function downloadResponseHeaders(headers: Headers, name: string | undefined): Headers {
  const out = new Headers();
  const decoded = decodedCodings.has((headers.get("content-encoding") ?? "").trim().toLowerCase());
  headers.forEach((value, key) => {
    if (!downloadHeaderWhitelist.has(key)) return;
    if (decoded && key === "content-length") return;
    out.append(key, value);
  });
  out.set("content-type", "application/octet-stream");
  out.set("x-content-type-options", "nosniff");
  out.set("content-security-policy", "sandbox");
  out.set("content-disposition", attachmentDisposition(name));
  out.set("cache-control", "no-store");
  return out;
}

/** The guest's response headers as the client gets them, under the destination's policy. */
export function clientResponseHeaders(
  headers: Headers,
  destination?: Pick<ProxyDestination, "responsePolicy" | "downloadName">,
): Headers {
  const policy = destination?.responsePolicy ?? "guest";
  if (policy === "download") return downloadResponseHeaders(headers, destination?.downloadName);
  const out = new Headers();
  const decoded = decodedCodings.has((headers.get("content-encoding") ?? "").trim().toLowerCase());
  headers.forEach((value, name) => {
    if (hopByHop.has(name)) return;
    if (decoded && (name === "content-encoding" || name === "content-length")) return;
    if (policy === "no-cookies" && name === "set-cookie") return;
    out.append(name, value);
  });
  return out;
}

/** The agent's own refusals are small JSON bodies; anything longer is the guest's and is relayed. */
const agentRefusalMaxBytes = 4096;

async function agentRefusal(
  res: Response,
  destination: ProxyDestination,
  requestId: string,
): Promise<Response | undefined> {
  if (res.status !== 502 && res.status !== 404 && res.status !== 409) return undefined;
  if (!(res.headers.get("content-type") ?? "").startsWith("application/json")) return undefined;
  const length = Number(res.headers.get("content-length") ?? Number.NaN);
  if (!(length > 0 && length < agentRefusalMaxBytes)) return undefined;
  const text = await readTextLimited(res.clone(), agentRefusalMaxBytes).catch(() => "");
  return refusalForAgentBody(text, destination, requestId);
}

/**
 * The edge's answer for an agent's own refusal body (`{ error: { code, message } }`), or undefined
 * when the body is not one (a guest's answer, relayed as it is). Shared with the upgrade path.
 */
export function refusalForAgentBody(
  text: string,
  destination: Pick<ProxyDestination, "sandboxId" | "port">,
  requestId: string,
): Response | undefined {
  let reason: unknown;
  let message: unknown;
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === "object" && "error" in parsed && parsed.error && typeof parsed.error === "object") {
      reason = (parsed.error as Record<string, unknown>).code;
      message = (parsed.error as Record<string, unknown>).message;
    }
  } catch {
    return undefined;
  }
  const { sandboxId } = destination;
  if (reason === "PORT_NOT_OPEN") return portNotOpen(sandboxId, destination.port, requestId);
  if (typeof reason === "string" && agentNotFoundReasons.has(reason)) return sandboxNotFound(sandboxId, requestId);
  if (reason === "UPSTREAM_ERROR") return sandboxUnavailable(sandboxId, "the guest connection failed", requestId);
  if (typeof reason === "string" && agentBadResponseReasons.has(reason)) {
    const detail = typeof message === "string" && message !== "" ? message.slice(0, 200) : "as its host agent reports";
    return sandboxBadResponse(sandboxId, detail, requestId);
  }
  return undefined;
}

/**
 * Sends a request to a sandbox port through its agent's `/proxy` route and returns the answer.
 * Bodies stream both ways (Connect server streams, multi-gigabyte uploads); the agent's own
 * refusals become E2B's bodies.
 */
export async function forwardToSandbox(
  ctx: ServiceContext,
  destination: ProxyDestination,
  request: Request,
): Promise<Response> {
  const hasBody = request.method !== "GET" && request.method !== "HEAD" && request.body !== null;
  let res: Response;
  try {
    res = await ctx.agents.proxy(
      destination.target,
      destination.sandboxId,
      destination.port,
      destination.pathAndQuery,
      {
        method: request.method,
        headers: guestRequestHeaders(request.headers, destination),
        body: hasBody ? request.body : null,
        signal: request.signal,
        requestId: ctx.requestId,
      },
    );
  } catch (err) {
    if (request.signal.aborted) return new Response(null, { status: 499 });
    if (err instanceof BadUpstreamResponse) {
      ctx.logger.warn("sandbox proxy: malformed answer", { sandboxId: destination.sandboxId, reason: err.message });
      return sandboxBadResponse(destination.sandboxId, err.message, ctx.requestId);
    }
    ctx.logger.warn("sandbox proxy: agent unreachable", { sandboxId: destination.sandboxId, err });
    return sandboxUnavailable(destination.sandboxId, "its host agent is not answering", ctx.requestId);
  }
  // A `fetch` other than the Node edge's (Workers, tests) may hand over a status `Response` refuses.
  if (!isRelayableStatus(res.status)) {
    await res.body?.cancel().catch(() => {});
    ctx.logger.warn("sandbox proxy: malformed answer", { sandboxId: destination.sandboxId, status: res.status });
    return sandboxBadResponse(destination.sandboxId, `status ${res.status}`, ctx.requestId);
  }
  const refusal = await agentRefusal(res, destination, ctx.requestId);
  if (refusal) {
    await res.body?.cancel().catch(() => {});
    return refusal;
  }
  try {
    return markRelayed(
      new Response(res.body, {
        status: res.status,
        statusText: relayableStatusText(res.statusText),
        headers: clientResponseHeaders(res.headers, destination),
      }),
    );
  } catch (err) {
    await res.body?.cancel().catch(() => {});
    ctx.logger.warn("sandbox proxy: malformed answer", { sandboxId: destination.sandboxId, err });
    return sandboxBadResponse(destination.sandboxId, "its headers cannot be relayed", ctx.requestId);
  }
}

/**
 * A browser's CORS preflight for sandbox traffic: it carries the names of the routing headers but not
 * their values, so it cannot be routed; it is answered here (envd allows any origin, as E2B's does).
 */
export function sandboxPreflight(request: Request): Response | undefined {
  if (request.method !== "OPTIONS") return undefined;
  const requested = (request.headers.get("access-control-request-headers") ?? "").toLowerCase();
  if (!requested.split(",").some((h) => h.trim() === sandboxIdHeader)) return undefined;
  return new Response(null, {
    status: 204,
    headers: {
      "access-control-allow-origin": request.headers.get("origin") ?? "*",
      "access-control-allow-methods": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
      "access-control-allow-headers": requested,
      "access-control-max-age": "600",
      vary: "origin",
    },
  });
}

/**
 * The sandbox proxy as edge middleware: requests that carry E2B routing (headers, a
 * `<port>-<id>.<domain>` Host, or a signed `/files` URL) go to the sandbox; everything else is an
 * API call and passes on. Registered right after `init`, before any API authentication.
 */
export function sandboxProxy(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const preflight = sandboxPreflight(c.req.raw);
    if (preflight) return preflight;
    const ctx = c.get("services");
    const decision = await decideSandboxRoute(ctx, c.req.raw);
    if (decision.kind === "not-sandbox-traffic") return next();
    if (decision.kind === "refuse") return decision.response;
    return forwardToSandbox(ctx, decision.destination, c.req.raw);
  };
}
