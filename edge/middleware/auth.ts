import type { Context, MiddlewareHandler } from "hono";
import type { AppEnv } from "../context.js";
import { ApiError } from "../errors/api-error.js";
import { authenticate } from "../services/auth/authenticate.js";
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

/**
 * Authenticates the request's key, takes a token from its rate-limit bucket and sets the team
 * context. A rate-limited request gets `Retry-After` here, whichever router's error handler
 * (Wrenn's or E2B's) shapes the body.
 */
export async function authenticateRequest(c: Context<AppEnv>, missing: () => Error): Promise<void> {
  const secret = apiKeyFrom(c.req);
  if (!secret) throw missing();
  const services = c.get("services");
  try {
    const principal = await authenticate(services, secret);
    c.set("team", teamContext(services, principal));
  } catch (err) {
    if (err instanceof RateLimitedError) c.header("Retry-After", String(err.retryAfterSec));
    throw err;
  }
}

/** Requires a valid API key and sets the team context every /v1 service call runs in. */
export function requireApiKey(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    await authenticateRequest(
      c,
      () => new ApiError("UNAUTHORIZED", "send an API key in X-API-Key or Authorization: Bearer"),
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
