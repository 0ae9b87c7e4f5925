import { index, pgTable, primaryKey, text } from "drizzle-orm/pg-core";
import { teamRoles } from "../../contracts/accounts.js";
import { teams } from "./teams.js";
import { users } from "./users.js";
import { lifecycleDates } from "./util.js";

export { type TeamRole, teamRoles } from "../../contracts/accounts.js";

/** Who belongs to which team, and as what. */
export const memberships = pgTable(
  "memberships",
  {
    userId: text("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    teamId: text("team_id")
      .notNull()
      .references(() => teams.id, { onDelete: "cascade" }),
    role: text("role", { enum: teamRoles }).notNull(),
    ...lifecycleDates,
  },
  (t) => [primaryKey({ columns: [t.userId, t.teamId] }), index("memberships_team_idx").on(t.teamId)],
);

/** A row of `memberships`. */
export type MembershipRow = typeof memberships.$inferSelect;
