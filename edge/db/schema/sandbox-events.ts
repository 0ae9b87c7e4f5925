import { bigserial, index, jsonb, pgTable, text, timestamp } from "drizzle-orm/pg-core";

/** An append-only log of sandbox state changes: who changed what, from which state to which. */
export const sandboxEvents = pgTable(
  "sandbox_events",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    sandboxId: text("sandbox_id").notNull(),
    teamId: text("team_id").notNull(),
    /** e.g. `created`, `running`, `paused`, `resumed`, `stopped`, `error`, `timeout_set`. */
    type: text("type").notNull(),
    fromState: text("from_state"),
    toState: text("to_state"),
    /** `api` for user requests, `reconcile` for the sweep. */
    actor: text("actor").notNull().default("api"),
    detail: jsonb("detail").$type<Record<string, unknown>>().notNull().default({}),
    createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
  },
  (t) => [index("sandbox_events_sandbox_idx").on(t.sandboxId, t.id)],
);

/** A row of `sandbox_events`. */
export type SandboxEventRow = typeof sandboxEvents.$inferSelect;
