import type { MiddlewareHandler } from "hono";
import type { HostTarget } from "../clients/agent.js";
import type { AppEnv } from "../context.js";
import type { ServiceContext } from "../services/context.js";
import { findSandboxBySignature, resolveSandboxTraffic } from "../services/e2b/traffic.js";
import {
  badSandboxRoute,
  internalRouteRefused,
  portNotOpen,
  sandboxNotFound,
  sandboxUnavailable,
  signatureMatchesNoSandbox,
} from "./errors.js";
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
const routingOnly = new Set([sandboxIdHeader, sandboxPortHeader, "x-api-key", guestAuthorizationHeader]);

/** Codings `fetch` decodes by itself: when one was applied, the body we hold is already plain. */
const decodedCodings = new Set(["gzip", "x-gzip", "deflate", "br"]);

/** Reasons the agent's proxy gives in its own error bodies (guests never produce these). */
const agentNotFoundReasons = new Set(["SANDBOX_NOT_FOUND", "SANDBOX_PAUSED", "SANDBOX_NOT_RUNNING"]);

/** Where a sandbox request goes once resolved. */
export interface ProxyDestination {
  sandboxId: string;
  port: number;
  target: HostTarget;
  /** Path and query for the guest, e.g. `/files?path=a.txt`. */
  pathAndQuery: string;
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
  if (route.kind === "bad") return { kind: "refuse", response: badSandboxRoute(route.message) };
  const raw = splitRequestUrl(request.url);
  const normalized = normalizedPath(raw.pathname, raw.search);
  if (normalized === undefined) return { kind: "refuse", response: badSandboxRoute("invalid request path") };
  const { pathname, search } = normalized;
  let sandboxId: string;
  let port: number;
  if (route.kind === "signed-files") {
    const found = await findSandboxBySignature(ctx, route);
    if (found === undefined) return { kind: "refuse", response: signatureMatchesNoSandbox() };
    sandboxId = found;
    port = envdPort;
  } else {
    sandboxId = route.sandboxId;
    port = route.port;
  }
  if (isEnvdInternalRoute(port, pathname)) return { kind: "refuse", response: internalRouteRefused(pathname) };
  const destination = await resolveSandboxTraffic(ctx, sandboxId);
  if (destination.kind === "not-found") return { kind: "refuse", response: sandboxNotFound(sandboxId) };
  if (destination.kind === "unavailable") {
    return { kind: "refuse", response: sandboxUnavailable(sandboxId, destination.message) };
  }
  return {
    kind: "forward",
    destination: { sandboxId, port, target: destination.target, pathAndQuery: `${pathname}${search}` },
  };
}

/**
 * The headers a guest gets: the client's, minus hop-by-hop and routing headers, with `Authorization`
 * (envd's Basic user) renamed so the agent does not take it for its own bearer token, and
 * `Accept-Encoding: identity` because `fetch` would decode a compressed answer while keeping its
 * `Content-Encoding`, and the client would decode it twice.
 */
export function guestRequestHeaders(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  const connectionListed = new Set(
    (headers.get("connection") ?? "")
      .split(",")
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
  );
  headers.forEach((value, name) => {
    if (hopByHop.has(name) || routingOnly.has(name) || connectionListed.has(name)) return;
    if (name === "authorization") out[guestAuthorizationHeader] = value;
    else if (name !== "accept-encoding") out[name] = value;
  });
  out["accept-encoding"] = "identity";
  return out;
}

function clientResponseHeaders(headers: Headers): Headers {
  const out = new Headers();
  const decoded = decodedCodings.has((headers.get("content-encoding") ?? "").trim().toLowerCase());
  headers.forEach((value, name) => {
    if (hopByHop.has(name)) return;
    if (decoded && (name === "content-encoding" || name === "content-length")) return;
    out.append(name, value);
  });
  return out;
}

async function agentRefusal(res: Response, destination: ProxyDestination): Promise<Response | undefined> {
  if (res.status !== 502 && res.status !== 404 && res.status !== 409) return undefined;
  if (!(res.headers.get("content-type") ?? "").startsWith("application/json")) return undefined;
  const length = Number(res.headers.get("content-length") ?? Number.NaN);
  if (!(length > 0 && length < 4096)) return undefined;
  const text = await res.clone().text();
  let reason: unknown;
  try {
    const parsed: unknown = JSON.parse(text);
    reason =
      parsed && typeof parsed === "object" && "error" in parsed && parsed.error && typeof parsed.error === "object"
        ? (parsed.error as Record<string, unknown>).code
        : undefined;
  } catch {
    return undefined;
  }
  if (reason === "PORT_NOT_OPEN") return portNotOpen(destination.sandboxId, destination.port);
  if (typeof reason === "string" && agentNotFoundReasons.has(reason)) return sandboxNotFound(destination.sandboxId);
  if (reason === "UPSTREAM_ERROR") return sandboxUnavailable(destination.sandboxId, "the guest connection failed");
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
        headers: guestRequestHeaders(request.headers),
        body: hasBody ? request.body : null,
        signal: request.signal,
        requestId: ctx.requestId,
      },
    );
  } catch (err) {
    if (request.signal.aborted) return new Response(null, { status: 499 });
    ctx.logger.warn("sandbox proxy: agent unreachable", { sandboxId: destination.sandboxId, err });
    return sandboxUnavailable(destination.sandboxId, "its host agent is not answering");
  }
  const refusal = await agentRefusal(res, destination);
  if (refusal) {
    await res.body?.cancel().catch(() => {});
    return refusal;
  }
  return new Response(res.body, {
    status: res.status,
    statusText: res.statusText,
    headers: clientResponseHeaders(res.headers),
  });
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
