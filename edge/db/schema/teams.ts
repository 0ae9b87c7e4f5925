import { pgTable, text } from "drizzle-orm/pg-core";
import { lifecycleDates } from "./util.js";

/** A team owns sandboxes and API keys; every sandbox query is scoped by team. Ids look like `team_…`. */
export const teams = pgTable("teams", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  ...lifecycleDates,
});

/** A row of `teams`. */
export type TeamRow = typeof teams.$inferSelect;
