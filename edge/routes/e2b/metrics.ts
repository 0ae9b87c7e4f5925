import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { latestSandboxMetrics, sandboxMetricsInRange } from "../../services/telemetry/read.js";
import { e2bErrorResponses } from "./errors.js";
import {
  E2bSandboxesWithMetrics,
  E2bSandboxMetric,
  MetricsQuery,
  MultiMetricsQuery,
  SandboxIdParam,
} from "./schemas.js";

const route = createRoute({
  method: "get",
  path: "/sandboxes/{sandboxID}/metrics",
  tags: ["e2b"],
  operationId: "e2bGetSandboxMetrics",
  summary: "A sandbox's CPU, memory and disk use over time (E2B)",
  description:
    "Samples in [start, end] (unix seconds; default: from the sandbox's creation to now), oldest first: one every few seconds for the last 24 hours, 1-minute averages for up to 7 days before that. Also after the sandbox stopped.",
  ...scoped("sandboxes:read"),
  request: { params: SandboxIdParam, query: MetricsQuery },
  responses: {
    200: { description: "Samples", content: { "application/json": { schema: z.array(E2bSandboxMetric) } } },
    ...e2bErrorResponses,
  },
});

const multiRoute = createRoute({
  method: "get",
  path: "/sandboxes/metrics",
  tags: ["e2b"],
  operationId: "e2bListSandboxesMetrics",
  summary: "The newest sample of each named sandbox (E2B)",
  description:
    "The newest sample in [start, end] (default: up to now) of each named sandbox of the caller's team; sandboxes without one are left out.",
  ...scoped("sandboxes:read"),
  request: { query: MultiMetricsQuery },
  responses: {
    200: { description: "Samples by sandbox", content: { "application/json": { schema: E2bSandboxesWithMetrics } } },
    ...e2bErrorResponses,
  },
});

/** GET /sandboxes/metrics; registered before GET /sandboxes/{sandboxID}, which would take `metrics` for an id. */
export const registerE2bSandboxesMetrics = (app: App) =>
  app.openapi(multiRoute, async (c) => {
    const q = c.req.valid("query");
    const sandboxes = await latestSandboxMetrics(c.get("team"), q.sandbox_ids, { start: q.start, end: q.end });
    return c.json({ sandboxes }, 200);
  });

/** GET /sandboxes/{sandboxID}/metrics */
export const registerE2bSandboxMetrics = (app: App) =>
  app.openapi(route, async (c) =>
    c.json(await sandboxMetricsInRange(c.get("team"), c.req.valid("param").sandboxID, c.req.valid("query")), 200),
  );
