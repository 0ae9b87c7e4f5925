import { integer, timestamp } from "drizzle-orm/pg-core";

/** `created_at` / `updated_at` columns shared by every table that changes over time. */
export const lifecycleDates = {
  createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
  updatedAt: timestamp("updated_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
};

/**
 * Row version for compare-and-set updates: every state change writes `version + 1` guarded by
 * `where version = <the version read>`, so a reconcile sweep never overwrites a newer API change.
 */
export const rowVersion = {
  version: integer("version").notNull().default(0),
};
