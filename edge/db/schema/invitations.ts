import { index, pgTable, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";
import { type TeamRole, teamRoles } from "./memberships.js";
import { teams } from "./teams.js";

/**
 * Invitations into a team by link. The link's token is shown once; only its SHA-256 is stored. An
 * invitation is used at most once (`acceptedAt`). Ids look like `inv_…`.
 */
export const invitations = pgTable(
  "invitations",
  {
    id: text("id").primaryKey(),
    teamId: text("team_id")
      .notNull()
      .references(() => teams.id, { onDelete: "cascade" }),
    email: text("email").notNull(),
    role: text("role", { enum: teamRoles }).$type<TeamRole>().notNull(),
    tokenHash: text("token_hash").notNull(),
    /** The user (or API key) that invited. */
    invitedBy: text("invited_by").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
    expiresAt: timestamp("expires_at", { withTimezone: true, mode: "date" }).notNull(),
    acceptedAt: timestamp("accepted_at", { withTimezone: true, mode: "date" }),
    acceptedBy: text("accepted_by"),
    revokedAt: timestamp("revoked_at", { withTimezone: true, mode: "date" }),
  },
  (t) => [uniqueIndex("invitations_token_hash_idx").on(t.tokenHash), index("invitations_team_idx").on(t.teamId)],
);

/** A row of `invitations`. */
export type InvitationRow = typeof invitations.$inferSelect;
