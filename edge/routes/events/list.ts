import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { listEvents } from "../../services/events/list.js";
import { Event, ListEventsQuery } from "./schemas.js";

const route = createRoute({
  method: "get",
  path: "/",
  tags: ["events"],
  operationId: "listEvents",
  summary: "List the team's lifecycle events (newest first by default), with a cursor",
  ...scoped("sandboxes:read"),
  request: { query: ListEventsQuery },
  responses: {
    200: {
      description: "A page of events",
      content: {
        "application/json": { schema: z.object({ events: z.array(Event), nextCursor: z.string().optional() }) },
      },
    },
    ...openApiErrorResponses,
  },
});

/** GET /v1/events */
export const registerListEvents = (app: App) =>
  app.openapi(route, async (c) => {
    const q = c.req.valid("query");
    return c.json(
      await listEvents(c.get("team"), {
        limit: q.limit,
        order: q.order,
        ...(q.cursor !== undefined ? { cursor: q.cursor } : {}),
        ...(q.type ? { types: q.type } : {}),
        ...(q.sandboxId ? { sandboxId: q.sandboxId } : {}),
        ...(q.since ? { since: new Date(q.since) } : {}),
        ...(q.until ? { until: new Date(q.until) } : {}),
      }),
      200,
    );
  });
