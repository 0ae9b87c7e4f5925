import { OpenAPIHono } from "@hono/zod-openapi";
import { sha256 } from "@noble/hashes/sha2.js";
import { PROMETHEUS_CONTENT_TYPE } from "../../../lib/metrics.js";
import type { AppEnv } from "../../context.js";
import { errorResponse } from "../../errors/handle.js";
import type { EdgeObservability } from "../../middleware/observe.js";

/**
 * GET /metrics: the edge's Prometheus exposition, for a scraper holding WRENN_METRICS_TOKEN as a
 * bearer token. A token of its own rather than an admin API key: a scraper's config is read by more
 * people than the API's admin should be. Without the variable the route answers 404, so a fresh
 * install publishes nothing. Not in the OpenAPI document (it is not part of the API).
 */
export function metricsRouter(observability: EdgeObservability) {
  const router = new OpenAPIHono<AppEnv>();
  router.get("/metrics", (c) => {
    const token = observability.metricsToken;
    if (token === undefined)
      return errorResponse(c, "NOT_FOUND", "metrics are off: set WRENN_METRICS_TOKEN to serve them");
    if (!tokenMatches(c.req.header("authorization"), token))
      return errorResponse(c, "UNAUTHORIZED", "GET /metrics needs `Authorization: Bearer <WRENN_METRICS_TOKEN>`");
    return c.body(observability.metrics.registry.render(), 200, { "content-type": PROMETHEUS_CONTENT_TYPE });
  });
  return router;
}

/** Constant-time comparison of the presented bearer token (both sides hashed first, so lengths do not leak). */
function tokenMatches(header: string | undefined, token: string): boolean {
  const presented = header?.startsWith("Bearer ") ? header.slice(7) : "";
  if (presented === "") return false;
  const encoder = new TextEncoder();
  const a = sha256(encoder.encode(presented));
  const b = sha256(encoder.encode(token));
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}
