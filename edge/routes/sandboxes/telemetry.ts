import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { sandboxLogEntries, sandboxMetricsInRange } from "../../services/telemetry/read.js";
import { SandboxIdParam } from "./schemas.js";

const Metric = z
  .object({
    timestamp: z.string().openapi({ description: "RFC 3339" }),
    timestampUnix: z.number().int(),
    cpuCount: z.number().int(),
    cpuUsedPct: z.number(),
    memUsed: z.number().int(),
    memTotal: z.number().int(),
    memCache: z.number().int(),
    diskUsed: z.number().int(),
    diskTotal: z.number().int(),
  })
  .openapi("SandboxMetric");

const MetricsQuery = z.object({
  start: z.coerce.number().int().min(0).optional().openapi({ description: "Unix seconds (included)" }),
  end: z.coerce.number().int().min(0).optional().openapi({ description: "Unix seconds (included)" }),
});

const level = z.enum(["debug", "info", "warn", "error"]);
const LogEntry = z
  .object({ timestamp: z.string(), level, message: z.string(), fields: z.record(z.string(), z.string()) })
  .openapi("SandboxLogEntry");

const LogsQuery = z.object({
  cursor: z.coerce.number().int().min(0).optional().openapi({ description: "Milliseconds since the epoch" }),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
  direction: z.enum(["forward", "backward"]).optional(),
  level: level.optional().openapi({ description: "The lowest level returned" }),
  search: z.string().max(256).optional().openapi({ description: "Case-sensitive substring of the message" }),
});

const metricsRoute = createRoute({
  method: "get",
  path: "/{id}/metrics",
  tags: ["sandboxes"],
  operationId: "getSandboxMetrics",
  summary: "A sandbox's CPU, memory and disk use over time",
  description:
    "Samples in [start, end] (unix seconds; default: from creation to now), oldest first: one every few seconds " +
    "(the agent's AGENT_METRICS_INTERVAL_MS) for the last 24 hours, 1-minute averages for 7 days before that. " +
    "Read after the sandbox stopped too.",
  ...scoped("sandboxes:read"),
  request: { params: SandboxIdParam, query: MetricsQuery },
  responses: {
    200: {
      description: "Samples",
      content: { "application/json": { schema: z.object({ metrics: z.array(Metric) }) } },
    },
    ...openApiErrorResponses,
  },
});

const logsRoute = createRoute({
  method: "get",
  path: "/{id}/logs",
  tags: ["sandboxes"],
  operationId: "getSandboxLogs",
  summary: "A sandbox's log",
  description:
    "Each process envd started and its end with the exit code, and the sandbox's lifecycle events, by time. " +
    "`forward` (default) from `cursor` oldest first; `backward` up to `cursor` newest first. Kept 7 days, also " +
    "after the sandbox stopped.",
  ...scoped("sandboxes:read"),
  request: { params: SandboxIdParam, query: LogsQuery },
  responses: {
    200: {
      description: "Log entries",
      content: { "application/json": { schema: z.object({ logs: z.array(LogEntry) }) } },
    },
    ...openApiErrorResponses,
  },
});

/** GET /v1/sandboxes/{id}/metrics and /logs */
export function registerSandboxTelemetry(app: App): void {
  app.openapi(metricsRoute, async (c) => {
    const metrics = await sandboxMetricsInRange(c.get("team"), c.req.valid("param").id, c.req.valid("query"));
    return c.json({ metrics }, 200);
  });
  app.openapi(logsRoute, async (c) => {
    const logs = await sandboxLogEntries(c.get("team"), c.req.valid("param").id, c.req.valid("query"));
    return c.json({ logs }, 200);
  });
}
