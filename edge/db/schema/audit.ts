import { bigserial, index, jsonb, pgTable, text, timestamp } from "drizzle-orm/pg-core";
import { auditActorTypes } from "../../contracts/accounts.js";

export { type AuditActorType, auditActorTypes } from "../../contracts/accounts.js";

/**
 * Who did what to which object, when and from where (edge/services/audit/). Rows are only ever
 * inserted; the serial id orders them and is the listing's cursor. `team_id` has no foreign key so
 * a team's trail outlives the team; it is null for events of no team (a sign-in with an unknown email).
 */
export const auditLog = pgTable(
  "audit_log",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    teamId: text("team_id"),
    actorType: text("actor_type", { enum: auditActorTypes }).notNull(),
    /** A user id (`usr_…`), an API key id (`key_…`), or null. */
    actorId: text("actor_id"),
    /** What happened, as `<object>.<verb>`, e.g. `api_key.create` (docs/accounts.md lists them). */
    action: text("action").notNull(),
    objectType: text("object_type"),
    objectId: text("object_id"),
    at: timestamp("at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
    ip: text("ip"),
    details: jsonb("details").$type<Record<string, unknown>>().notNull().default({}),
  },
  (t) => [index("audit_log_team_id_idx").on(t.teamId, t.id), index("audit_log_action_idx").on(t.action, t.id)],
);

/** A row of `audit_log`. */
export type AuditRow = typeof auditLog.$inferSelect;
