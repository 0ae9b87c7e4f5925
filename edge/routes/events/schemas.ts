import { z } from "@hono/zod-openapi";
import { eventTypes } from "../../services/events/types.js";

/** An event (docs/events-and-webhooks.md); webhooks POST the same object. */
export const Event = z
  .object({
    id: z
      .string()
      .openapi({ description: "`evt_<n>`; n only grows (the cursor and the stream's id)", example: "evt_42" }),
    type: z.string().openapi({ example: "sandbox.killed" }),
    teamId: z.string().nullable().openapi({ description: "null for operator (host) events, which admin keys see" }),
    sandboxId: z.string().nullable(),
    hostId: z.string().nullable(),
    actor: z.string().openapi({ description: "api, reconcile, host or edge" }),
    data: z.record(z.string(), z.unknown()),
    createdAt: z.string(),
  })
  .openapi("Event");

const types = z
  .union([z.string(), z.array(z.string())])
  .optional()
  .transform((v) => (v === undefined ? undefined : (Array.isArray(v) ? v : v.split(",")).map((t) => t.trim())))
  .openapi({
    description: `Event types, comma-separated or repeated: ${eventTypes.join(", ")}`,
    example: "sandbox.killed,sandbox.timed_out",
  });
const time = (what: string) =>
  z.iso
    .datetime({ offset: true })
    .optional()
    .openapi({ description: `${what} (RFC 3339)` });

/** Filters shared by the list and the stream. */
export const EventFilterQuery = z.object({
  type: types,
  sandboxId: z.string().min(1).max(64).optional(),
  since: time("Events at or after this time"),
  until: time("Events at or before this time"),
});

/** Query of GET /v1/events. */
export const ListEventsQuery = EventFilterQuery.extend({
  cursor: z.string().max(40).optional().openapi({ description: "nextCursor of the previous page" }),
  limit: z.coerce.number().int().min(1).max(500).default(100),
  order: z.enum(["asc", "desc"]).default("desc"),
});

/** Query of GET /v1/events/stream. */
export const StreamEventsQuery = EventFilterQuery.extend({
  after: z
    .string()
    .max(40)
    .optional()
    .openapi({ description: "Start after this event id (what `Last-Event-ID` does; the header wins)" }),
});
