import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { sandboxLogEntries } from "../../services/telemetry/read.js";
import { e2bErrorResponses } from "./errors.js";
import { E2bSandboxLogsV1, E2bSandboxLogsV2, LogsV1Query, LogsV2Query, SandboxIdParam } from "./schemas.js";

const description =
  "The sandbox's log: each process envd started and its end with the exit code, and the sandbox's lifecycle (created, running, paused, resumed, timeout, killed, errors). Kept 7 days, also after the sandbox stopped.";

const v2Route = createRoute({
  method: "get",
  path: "/v2/sandboxes/{sandboxID}/logs",
  tags: ["e2b"],
  operationId: "e2bGetSandboxLogsV2",
  summary: "A sandbox's log (E2B)",
  description,
  ...scoped("sandboxes:read"),
  request: { params: SandboxIdParam, query: LogsV2Query },
  responses: {
    200: { description: "Log entries", content: { "application/json": { schema: E2bSandboxLogsV2 } } },
    ...e2bErrorResponses,
  },
});

const v1Route = createRoute({
  method: "get",
  path: "/sandboxes/{sandboxID}/logs",
  tags: ["e2b"],
  operationId: "e2bGetSandboxLogs",
  summary: "A sandbox's log (E2B, deprecated shape)",
  description: `${description} Entries at or after \`start\` (milliseconds), oldest first.`,
  ...scoped("sandboxes:read"),
  request: { params: SandboxIdParam, query: LogsV1Query },
  responses: {
    200: { description: "Log lines and entries", content: { "application/json": { schema: E2bSandboxLogsV1 } } },
    ...e2bErrorResponses,
  },
});

/** GET /v2/sandboxes/{sandboxID}/logs and GET /sandboxes/{sandboxID}/logs */
export function registerE2bSandboxLogs(app: App): void {
  app.openapi(v2Route, async (c) => {
    const logs = await sandboxLogEntries(c.get("team"), c.req.valid("param").sandboxID, c.req.valid("query"));
    return c.json({ logs }, 200);
  });
  app.openapi(v1Route, async (c) => {
    const q = c.req.valid("query");
    const entries = await sandboxLogEntries(c.get("team"), c.req.valid("param").sandboxID, {
      cursor: q.start,
      limit: q.limit,
      direction: "forward",
    });
    return c.json(
      { logs: entries.map((e) => ({ timestamp: e.timestamp, line: e.message })), logEntries: entries },
      200,
    );
  });
}
