import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../../context.js";
import { authenticateRequest } from "../../middleware/auth.js";
import { ServiceError } from "../../services/errors.js";

/**
 * Authenticates an E2B-surface call with a Wrenn API key (`X-API-Key`, as the E2B SDKs send it, or
 * `Authorization: Bearer`) and sets the team context; failures become E2B's 401 in the router's
 * error handler.
 */
export function requireE2bApiKey(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    await authenticateRequest(c, () => new ServiceError("UNAUTHORIZED", "no API key"));
    await next();
  };
}
