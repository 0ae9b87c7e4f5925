import { createRoute, z } from "@hono/zod-openapi";
import { streamSSE } from "hono/streaming";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import type { EventFilter } from "../../services/events/list.js";
import { canFollowLive, followEvents, streamStart, waitForEvents } from "../../services/events/stream.js";
import type { EventView } from "../../services/events/view.js";
import { StreamEventsQuery } from "./schemas.js";

/** How often a live stream looks for new events. */
const pollMs = 250;
/** A comment line this often keeps proxies from closing a quiet stream. */
const keepAliveMs = 15_000;
/** Long polling (Workers): how long one request waits for an event before answering empty. */
const longPollMs = 20_000;

const route = createRoute({
  method: "get",
  path: "/stream",
  tags: ["events"],
  operationId: "streamEvents",
  summary: "Follow the team's events live (Server-Sent Events); resumes after Last-Event-ID",
  description:
    "Each event is an SSE message whose `id` is the event id and whose `data` is the event as GET /v1/events shows it. Without Last-Event-ID (or `after`) the stream starts with the next event. On Node the stream stays open; on Workers each request waits up to 20 s for events, answers, and the client reconnects (EventSource does so on its own, sending Last-Event-ID).",
  ...scoped("sandboxes:read"),
  request: {
    query: StreamEventsQuery,
    headers: z.object({ "last-event-id": z.string().max(40).optional() }),
  },
  responses: {
    200: { description: "An event stream", content: { "text/event-stream": { schema: z.string() } } },
    ...openApiErrorResponses,
  },
});

function sseMessage(event: EventView): string {
  return `id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

/** GET /v1/events/stream */
export const registerStreamEvents = (app: App) =>
  app.openapi(route, async (c) => {
    const q = c.req.valid("query");
    const team = c.get("team");
    const filter: EventFilter = {
      ...(q.type ? { types: q.type } : {}),
      ...(q.sandboxId ? { sandboxId: q.sandboxId } : {}),
      ...(q.since ? { since: new Date(q.since) } : {}),
      ...(q.until ? { until: new Date(q.until) } : {}),
    };
    const after = await streamStart(team, filter, c.req.valid("header")["last-event-id"] ?? q.after);
    if (!canFollowLive(team)) {
      const batch = await waitForEvents(team, filter, after, {
        waitMs: longPollMs,
        pollMs: 1000,
        signal: c.req.raw.signal,
      });
      // `retry` makes EventSource come back at once; an empty answer still names where it stands.
      const body = `retry: 100\n${batch.length === 0 ? `id: evt_${after}\n\n` : batch.map(sseMessage).join("")}`;
      return c.body(body, 200, { "content-type": "text/event-stream", "cache-control": "no-store" });
    }
    return streamSSE(c, async (stream) => {
      const stop = new AbortController();
      stream.onAbort(() => stop.abort());
      c.req.raw.signal.addEventListener("abort", () => stop.abort(), { once: true });
      const keepAlive = setInterval(() => {
        stream.write(": keep-alive\n\n").catch(() => stop.abort());
      }, keepAliveMs);
      try {
        // A first comment so clients (and tests) see the stream is open before any event comes.
        await stream.write(": connected\n\n");
        for await (const event of followEvents(team, filter, after, { pollMs, signal: stop.signal })) {
          await stream.writeSSE({ id: event.id, event: event.type, data: JSON.stringify(event) });
        }
      } finally {
        clearInterval(keepAlive);
      }
    });
  });
