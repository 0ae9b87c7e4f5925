import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { sandboxMetrics } from "../../services/e2b/metrics.js";
import { e2bErrorResponses } from "./errors.js";
import { E2bSandboxMetric, MetricsQuery, SandboxIdParam } from "./schemas.js";

const route = createRoute({
  method: "get",
  path: "/sandboxes/{sandboxID}/metrics",
  tags: ["e2b"],
  operationId: "e2bGetSandboxMetrics",
  summary: "A sandbox's CPU, memory and disk use (E2B)",
  description:
    "Wrenn keeps no history: the answer is one sample read from envd now (none while paused); `start` and `end` are accepted and ignored.",
  ...scoped("sandboxes:read"),
  request: { params: SandboxIdParam, query: MetricsQuery },
  responses: {
    200: { description: "Samples", content: { "application/json": { schema: z.array(E2bSandboxMetric) } } },
    ...e2bErrorResponses,
  },
});

/** GET /sandboxes/{sandboxID}/metrics */
export const registerE2bSandboxMetrics = (app: App) =>
  app.openapi(route, async (c) => c.json(await sandboxMetrics(c.get("team"), c.req.valid("param").sandboxID), 200));
