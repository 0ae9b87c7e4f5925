import { bigserial, index, jsonb, pgTable, text, timestamp } from "drizzle-orm/pg-core";

/**
 * The public event log (docs/events-and-webhooks.md): one row per lifecycle change a user may react
 * to (`sandbox.created`, `sandbox.killed`, `host.down`, `webhook.disabled`, …), written in the same
 * transaction as the change itself. `sandbox_events` stays the internal, finer-grained audit trail
 * (every CAS, with states); this table is what `GET /v1/events`, the SSE stream and webhooks read.
 * The id is the cursor: it only grows, so `id > last` resumes a stream.
 */
export const events = pgTable(
  "events",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    /** The team the event belongs to; null for operator events (hosts), which only admin keys see. */
    teamId: text("team_id"),
    /** Dotted name, e.g. `sandbox.killed`; see `eventTypes` in edge/services/events/types.ts. */
    type: text("type").notNull(),
    sandboxId: text("sandbox_id"),
    hostId: text("host_id"),
    /** `api` for user requests, `reconcile` for the sweep, `host` for what an agent reported, `edge` for the edge itself. */
    actor: text("actor").notNull().default("api"),
    data: jsonb("data").$type<Record<string, unknown>>().notNull().default({}),
    createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
  },
  (t) => [
    index("events_team_idx").on(t.teamId, t.id),
    index("events_sandbox_idx").on(t.sandboxId, t.id),
    index("events_created_idx").on(t.createdAt),
  ],
);

/** A row of `events`. */
export type EventRow = typeof events.$inferSelect;
