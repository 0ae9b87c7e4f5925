import type { MiddlewareHandler } from "hono";
import type { AppDeps, AppEnv } from "../context.js";
import { isProcessDatabase } from "../db/client.js";
import { createApiKeyCache } from "../services/auth/key-cache.js";
import { serviceContext } from "../services/context.js";

/** Header carrying the request id, in both directions. */
export const requestIdHeader = "X-Request-Id";

const acceptableRequestId = /^[A-Za-z0-9._:-]{8,128}$/;

/**
 * The one `init` middleware: picks the request id (the caller's, when well-formed), opens the
 * database handle for this request, and sets the typed variables every route uses. A per-request
 * handle is closed after the response (in `waitUntil` on Workers, so Neon's Pool dies with its
 * request); a shared one (Node) is left open.
 */
export function init(deps: AppDeps): MiddlewareHandler<AppEnv> {
  const keyCache = createApiKeyCache();
  return async (c, next) => {
    const incoming = c.req.header(requestIdHeader);
    const requestId =
      incoming && acceptableRequestId.test(incoming)
        ? incoming
        : `req_${crypto.randomUUID().replace(/-/g, "").slice(0, 20)}`;
    const logger = deps.logger.child({ requestId });
    c.set("requestId", requestId);
    c.set("logger", logger);
    c.header(requestIdHeader, requestId);
    const handle = deps.database();
    c.set("services", serviceContext(deps, { db: handle.db, requestId, logger, keyCache }));
    if (isProcessDatabase(handle.db)) {
      await next();
      return;
    }
    try {
      await next();
    } finally {
      const closing = handle.close().catch((err: unknown) => logger.warn("closing the database failed", { err }));
      let executionCtx: { waitUntil(p: Promise<unknown>): void } | undefined;
      try {
        executionCtx = c.executionCtx;
      } catch {
        // Node has no execution context; the close runs on its own.
      }
      executionCtx?.waitUntil(closing);
    }
  };
}
