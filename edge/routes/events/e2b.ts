import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { listE2bSandboxEvents } from "../../services/events/e2b.js";
import { e2bErrorResponses } from "../e2b/errors.js";

const E2bSandboxEvent = z
  .object({
    version: z.literal("v1"),
    id: z.string(),
    type: z.string().openapi({ example: "sandbox.lifecycle.killed" }),
    eventData: z.record(z.string(), z.unknown()).nullable(),
    sandboxId: z.string(),
    sandboxTeamId: z.string(),
    sandboxTemplateId: z.string(),
    sandboxBuildId: z.string(),
    sandboxExecutionId: z.string(),
    timestamp: z.string(),
  })
  .openapi("E2bSandboxEvent");

const Query = z.object({
  offset: z.coerce.number().int().min(0).default(0),
  limit: z.coerce.number().int().min(1).max(100).default(10),
  orderAsc: z.enum(["true", "false"]).default("false"),
  types: z
    .union([z.string(), z.array(z.string())])
    .optional()
    .openapi({ description: "E2B event types (repeatable), e.g. sandbox.lifecycle.killed" }),
});

const description =
  "E2B's lifecycle events API over Wrenn's events: created, paused, resumed, updated, killed (also timed out or errored) and checkpointed (a snapshot). Wrenn's own GET /v1/events has every type, cursors and a live stream.";

const teamRoute = createRoute({
  method: "get",
  path: "/events/sandboxes",
  tags: ["e2b"],
  operationId: "e2bListSandboxEvents",
  summary: "The team's sandbox lifecycle events (E2B)",
  description,
  ...scoped("sandboxes:read"),
  request: { query: Query },
  responses: {
    200: { description: "Events", content: { "application/json": { schema: z.array(E2bSandboxEvent) } } },
    ...e2bErrorResponses,
  },
});

const sandboxRoute = createRoute({
  method: "get",
  path: "/events/sandboxes/{sandboxID}",
  tags: ["e2b"],
  operationId: "e2bListOneSandboxEvents",
  summary: "One sandbox's lifecycle events (E2B)",
  description,
  ...scoped("sandboxes:read"),
  request: { params: z.object({ sandboxID: z.string().min(1).max(64) }), query: Query },
  responses: {
    200: { description: "Events", content: { "application/json": { schema: z.array(E2bSandboxEvent) } } },
    ...e2bErrorResponses,
  },
});

type QueryIn = z.infer<typeof Query>;
const input = (q: QueryIn) => ({
  offset: q.offset,
  limit: q.limit,
  orderAsc: q.orderAsc === "true",
  ...(q.types ? { types: Array.isArray(q.types) ? q.types : [q.types] } : {}),
});

/** GET /events/sandboxes and /events/sandboxes/{sandboxID} on the E2B surface. */
export const registerE2bEvents = (app: App) => {
  app.openapi(teamRoute, async (c) =>
    c.json(await listE2bSandboxEvents(c.get("team"), input(c.req.valid("query"))), 200),
  );
  app.openapi(sandboxRoute, async (c) =>
    c.json(
      await listE2bSandboxEvents(c.get("team"), {
        ...input(c.req.valid("query")),
        sandboxId: c.req.valid("param").sandboxID,
      }),
      200,
    ),
  );
};
