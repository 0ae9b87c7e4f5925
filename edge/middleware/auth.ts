import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../context.js";
import { ApiError } from "../errors/api-error.js";
import { verifyApiKey } from "../services/auth/verify-api-key.js";

/** The API key of a request: `X-API-Key`, else `Authorization: Bearer <key>`. */
export function apiKeyFrom(headers: { header(name: string): string | undefined }): string | undefined {
  const direct = headers.header("x-api-key")?.trim();
  if (direct) return direct;
  const authorization = headers.header("authorization")?.trim();
  const match = authorization ? /^Bearer\s+(\S+)$/i.exec(authorization) : null;
  return match?.[1];
}

/** Requires a valid API key and sets the team context every /v1 service call runs in. */
export function requireApiKey(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const secret = apiKeyFrom(c.req);
    if (!secret) throw new ApiError("UNAUTHORIZED", "send an API key in X-API-Key or Authorization: Bearer");
    const services = c.get("services");
    const principal = await verifyApiKey(services, secret);
    c.set("team", { ...services, principal, logger: services.logger.child({ teamId: principal.teamId }) });
    await next();
  };
}

/** Requires the (already authenticated) key to be an admin key. */
export function requireAdmin(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (!c.get("team").principal.isAdmin) throw new ApiError("FORBIDDEN", "this route needs an admin API key");
    await next();
  };
}
