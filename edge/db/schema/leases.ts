import { pgTable, text, timestamp } from "drizzle-orm/pg-core";

/**
 * Named leases with an expiry, e.g. `reconcile`: a holder takes the row when it is free or expired,
 * so only one reconcile sweep runs at a time across every edge instance.
 */
export const leases = pgTable("leases", {
  name: text("name").primaryKey(),
  holder: text("holder").notNull(),
  expiresAt: timestamp("expires_at", { withTimezone: true, mode: "date" }).notNull(),
});

/** A row of `leases`. */
export type LeaseRow = typeof leases.$inferSelect;
