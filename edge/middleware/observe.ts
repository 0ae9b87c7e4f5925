import { SpanKind, SpanStatusCode, type Tracer } from "@opentelemetry/api";
import type { MiddlewareHandler } from "hono";
import { matchedRoutes } from "hono/route";
import type { AgentConnector } from "../clients/agent.js";
import type { AppEnv } from "../context.js";
import {
  contextFromHeaders,
  noopTracer,
  REQUEST_ID_ATTRIBUTE,
  SANDBOX_ID_ATTRIBUTE,
  traceHeadersOf,
} from "../tracing.js";
import { EdgeMetrics } from "./metrics.js";

/** The edge's metrics and tracer, made once per process (or isolate) by its entry point. */
export interface EdgeObservability {
  metrics: EdgeMetrics;
  /** Records the edge's request spans; the no-op tracer (propagation only) when nothing exports them. */
  tracer: Tracer;
  /** The bearer token GET /metrics asks for (WRENN_METRICS_TOKEN); unset: /metrics is off. */
  metricsToken?: string;
}

/** Observability that counts but exports no spans: tests, and the default of `createApp`. */
export function defaultObservability(): EdgeObservability {
  return { metrics: new EdgeMetrics(), tracer: noopTracer };
}

/** Route label of requests the sandbox proxy answered (E2B routing headers, sandbox hosts). */
export const SANDBOX_PROXY_ROUTE = "(sandbox-proxy)";
/** Route label of requests no route matched. */
export const UNMATCHED_ROUTE = "(unmatched)";

/** Methods counted by name; any other (a client may send any token) counts as `OTHER`, so labels stay bounded. */
const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

/** An AgentConnector whose calls all carry `headers` (the request's `traceparent`). */
function withHeaders(agents: AgentConnector, headers: Record<string, string>): AgentConnector {
  return {
    client: (host, requestId, extra) => agents.client(host, requestId, { ...headers, ...extra }),
    proxy: (host, sandboxId, port, pathAndQuery, init) =>
      agents.proxy(host, sandboxId, port, pathAndQuery, { ...init, headers: { ...init.headers, ...headers } }),
  };
}

/**
 * Marks a request as API traffic: the middleware right after the sandbox proxy, so that a request
 * whose route index stops before it was answered by the proxy (see `observe`).
 */
export const apiTraffic: MiddlewareHandler<AppEnv> = (_c, next) => next();

/**
 * Metrics and the request span of every request. Registered right after `init` and right before the
 * sandbox proxy (then `apiTraffic`): the span continues the caller's `traceparent` (or starts a
 * trace), its headers ride on every agent call of the request, and its trace id on every log line.
 * Labels use the route pattern (`/v1/sandboxes/:id/exec`), never the path, so ids never become
 * series; requests the sandbox proxy answered count as `(sandbox-proxy)`, unmatched ones as `(unmatched)`.
 */
export function observe(observability: EdgeObservability): MiddlewareHandler<AppEnv> {
  const { metrics, tracer } = observability;
  return async (c, next) => {
    const started = performance.now();
    const ownIndex = c.req.routeIndex;
    const method = KNOWN_METHODS.has(c.req.method) ? c.req.method : "OTHER";
    const parent = contextFromHeaders((name) => c.req.header(name));
    const span = tracer.startSpan(
      method,
      {
        kind: SpanKind.SERVER,
        attributes: { "http.request.method": method, [REQUEST_ID_ATTRIBUTE]: c.get("requestId") },
      },
      parent,
    );
    const spanContext = span.spanContext();
    const headers = traceHeadersOf(span, parent);
    if (headers.traceparent !== undefined) {
      const traceId = spanContext.traceId;
      const services = c.get("services");
      const logger = c.get("logger").child({ traceId });
      c.set("logger", logger);
      c.set("services", {
        ...services,
        agents: withHeaders(services.agents, headers),
        logger: services.logger.child({ traceId }),
      });
    }
    let failed = false;
    try {
      await next();
    } catch (err) {
      failed = true;
      throw err;
    } finally {
      const status = failed ? 500 : c.res.status;
      const route = routeLabel(c, ownIndex);
      metrics.httpRequests.inc({ method, route, status: String(status) });
      metrics.httpDuration.observe({ method, route }, (performance.now() - started) / 1000);
      if (span.isRecording()) {
        span.updateName(`${method} ${route}`);
        span.setAttribute("http.route", route);
        span.setAttribute("http.response.status_code", status);
        const sandboxId = route.includes("/sandboxes/") ? sandboxParam(c) : undefined;
        if (sandboxId !== undefined) span.setAttribute(SANDBOX_ID_ATTRIBUTE, sandboxId);
        if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      }
      span.end();
    }
  };
}

type ObservedContext = Parameters<MiddlewareHandler<AppEnv>>[0];

/** The route pattern a request matched, or one of the two fixed labels. */
export function routeLabel(c: ObservedContext, ownIndex: number): string {
  // The sandbox proxy is the middleware after this one: if the chain stopped there, it answered.
  if (c.req.routeIndex === ownIndex + 1) return SANDBOX_PROXY_ROUTE;
  const routes = matchedRoutes(c);
  for (let i = routes.length - 1; i >= 0; i--) {
    const route = routes[i];
    if (route !== undefined && route.method !== "ALL") return route.path;
  }
  return UNMATCHED_ROUTE;
}

/** The sandbox id path parameter of the matched route (`:id` in /v1, `:sandboxID` in the E2B API). */
function sandboxParam(c: ObservedContext): string | undefined {
  try {
    const params = c.req.param() as Record<string, string | undefined>;
    return params.id ?? params.sandboxID;
  } catch {
    return undefined;
  }
}
