import type { Context, MiddlewareHandler } from "hono";
import { getCookie } from "hono/cookie";
import type { AppEnv } from "../context.js";
import { ApiError } from "../errors/api-error.js";
import { accountSettings } from "../services/accounts/sessions.js";
import { authenticate, authenticateSession } from "../services/auth/authenticate.js";
import { type ApiKeyScope, hasScope, scopeDescriptions } from "../services/auth/scopes.js";
import { teamContext } from "../services/context.js";
import { ServiceError } from "../services/errors.js";
import { RateLimitedError } from "../services/rate-limit/errors.js";

/** The API key of a request: `X-API-Key`, else `Authorization: Bearer <key>`. */
export function apiKeyFrom(headers: { header(name: string): string | undefined }): string | undefined {
  const direct = headers.header("x-api-key")?.trim();
  if (direct) return direct;
  const authorization = headers.header("authorization")?.trim();
  const match = authorization ? /^Bearer\s+(\S+)$/i.exec(authorization) : null;
  return match?.[1];
}

/** The session cookie (HttpOnly): an opaque token, stored hashed (docs/accounts.md). */
export const sessionCookie = "wrenn_session";
/** The CSRF cookie (readable by the page's script), whose value the CSRF header repeats. */
export const csrfCookie = "wrenn_csrf";
/** The header every state-changing request made with the session cookie must carry. */
export const csrfHeader = "X-CSRF-Token";
/** The header that picks which of the user's teams a session request acts in. */
export const teamHeader = "X-Wrenn-Team";

/** Workers name themselves so in `navigator.userAgent` (Node 20 has no `navigator`). */
const onWorkers = typeof navigator !== "undefined" && navigator.userAgent === "Cloudflare-Workers";

/** Methods that change nothing, so a session request needs no CSRF token for them. */
const safeMethods = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * The caller's address: the connection's peer on Node, Cloudflare's `CF-Connecting-IP` on Workers,
 * or — only with WRENN_TRUST_PROXY — the last address a proxy appended to `X-Forwarded-For` (the
 * one hop we trust; earlier entries are whatever the client wrote).
 */
export function clientIpOf(c: Context<AppEnv>, trustProxy: boolean): string | undefined {
  if (trustProxy) {
    const forwarded = c.req.header("x-forwarded-for")?.split(",").at(-1)?.trim();
    if (forwarded) return forwarded.slice(0, 64);
  }
  // @hono/node-server passes the Node request as `c.env.incoming`; read duck-typed, so the edge
  // imports nothing from node:*.
  const env = c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined;
  const peer = env?.incoming?.socket?.remoteAddress;
  if (peer) return peer;
  // Only Cloudflare sets CF-Connecting-IP (and overwrites a client's); anywhere else a client could write it.
  if (onWorkers) return c.req.header("cf-connecting-ip")?.slice(0, 64);
  return undefined;
}

/** Whether the request reached us over TLS (the edge's own HTTPS listener, Workers, or a trusted proxy). */
export function requestIsTls(c: Context<AppEnv>, trustProxy: boolean): boolean {
  const forwarded = trustProxy ? c.req.header("x-forwarded-proto")?.split(",")[0]?.trim() : undefined;
  if (forwarded) return forwarded === "https";
  return new URL(c.req.url).protocol === "https:";
}

/** Puts the client's address on the request's service context (audit log, sign-in limits). */
export function withClientIp(c: Context<AppEnv>): void {
  const services = c.get("services");
  if (services.clientIp !== undefined) return;
  const ip = clientIpOf(c, accountSettings(services).trustProxy);
  if (ip) c.set("services", { ...services, clientIp: ip });
}

/**
 * Authenticates the request — by its API key when it sends one, else by its session cookie — and
 * sets the team context. A key takes a token from its rate-limit bucket; a rate-limited request
 * gets `Retry-After` here, whichever router's error handler (Wrenn's or E2B's) shapes the body. A
 * session request that may change something must repeat the CSRF token in `X-CSRF-Token`
 * (a cross-site page can make the browser send the cookie, but cannot read it to send the header);
 * API-key requests are not subject to it, as no browser attaches a key on its own.
 */
export async function authenticateRequest(c: Context<AppEnv>, missing: () => Error): Promise<void> {
  withClientIp(c);
  const services = c.get("services");
  const secret = apiKeyFrom(c.req);
  if (!secret) {
    const token = getCookie(c, sessionCookie);
    if (!token) throw missing();
    const { principal } = await authenticateSession(services, token, {
      csrfToken: safeMethods.has(c.req.method) ? null : (c.req.header(csrfHeader) ?? ""),
      team: c.req.header(teamHeader),
    });
    if (!principal) throw new ServiceError("FORBIDDEN", "you belong to no team; ask an owner for an invitation");
    c.set("team", teamContext(services, principal));
    return;
  }
  try {
    const principal = await authenticate(services, secret);
    c.set("team", teamContext(services, principal));
  } catch (err) {
    if (err instanceof RateLimitedError) c.header("Retry-After", String(err.retryAfterSec));
    throw err;
  }
}

/**
 * Requires a valid API key or session and sets the team context every /v1 service call runs in.
 * Paths under `publicPrefix` (sign-up, sign-in…) pass through and authenticate on their own.
 */
export function requireApiKey(publicPrefix?: string): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (publicPrefix && c.req.path.startsWith(publicPrefix)) {
      withClientIp(c);
      await next();
      return;
    }
    await authenticateRequest(
      c,
      () =>
        new ApiError(
          "UNAUTHORIZED",
          "send an API key in X-API-Key or Authorization: Bearer, or sign in (session cookie)",
        ),
    );
    await next();
  };
}

/** Requires the (already authenticated) key to be an admin key. */
export function requireAdmin(): MiddlewareHandler<AppEnv> {
  return requireScope("admin");
}

/**
 * Requires the (already authenticated) key to hold `scope`: 403 INSUFFICIENT_SCOPE otherwise, or
 * 403 FORBIDDEN for `admin`, which is a kind of key rather than a scope one can be granted.
 */
export function requireScope(scope: ApiKeyScope): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    // A scoped route mounted where no key was checked must not run as nobody.
    const principal = c.get("team")?.principal;
    if (!principal) throw new ServiceError("UNAUTHORIZED", "send an API key in X-API-Key or Authorization: Bearer");
    if (scope === "admin" && !principal.isAdmin) {
      throw new ServiceError("FORBIDDEN", "this route needs an admin API key", { details: { requiredScope: scope } });
    }
    if (principal.user && !hasScope(principal, scope)) {
      throw new ServiceError("FORBIDDEN", `your role in this team (${principal.user.role}) does not allow this`, {
        details: { requiredScope: scope, role: principal.user.role },
      });
    }
    if (!hasScope(principal, scope)) {
      throw new ServiceError("INSUFFICIENT_SCOPE", `this route needs an API key with the "${scope}" scope`, {
        details: { requiredScope: scope },
      });
    }
    await next();
  };
}

/**
 * The route fields of an operation that needs `scope`: the security requirement (naming the scope,
 * as OpenAPI 3.1 allows for API-key schemes), an `x-wrenn-scope` extension, and the middleware that
 * enforces it. Spread into `createRoute({...})`, once per route.
 */
export function scoped(scope: ApiKeyScope): {
  security: Array<Record<string, string[]>>;
  "x-wrenn-scope": ApiKeyScope;
  middleware: MiddlewareHandler<AppEnv>;
} {
  return {
    security: [{ ApiKeyAuth: [scope] }, { BearerAuth: [scope] }],
    "x-wrenn-scope": scope,
    middleware: requireScope(scope),
  };
}

interface OpenApiDocument {
  paths?: object;
}

/**
 * Adds "Needs the `<scope>` scope…" to the description of every operation that declares
 * `x-wrenn-scope`, so readers of /docs see what a key needs without knowing the extension.
 */
export function withScopeNotes<T extends OpenApiDocument>(doc: T): T {
  for (const operations of Object.values(doc.paths ?? {}) as Array<object | undefined>) {
    for (const operation of Object.values(operations ?? {}) as unknown[]) {
      if (typeof operation !== "object" || operation === null) continue;
      const op = operation as { "x-wrenn-scope"?: ApiKeyScope; description?: string };
      const scope = op["x-wrenn-scope"];
      if (!scope) continue;
      const note = `Needs an API key with the \`${scope}\` scope (${scopeDescriptions[scope]}); admin keys hold every scope.`;
      op.description = op.description ? `${op.description}\n\n${note}` : note;
    }
  }
  return doc;
}
