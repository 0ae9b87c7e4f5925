import { boolean, doublePrecision, pgTable, text, timestamp } from "drizzle-orm/pg-core";
import { apiKeys } from "./api-keys.js";

/**
 * One token bucket per API key, shared by every edge through the database: each authenticated
 * request refills and takes a token in one atomic upsert (edge/services/rate-limit/take-token.ts).
 */
export const rateLimitBuckets = pgTable("rate_limit_buckets", {
  keyId: text("key_id")
    .primaryKey()
    .references(() => apiKeys.id, { onDelete: "cascade" }),
  /** Tokens left at `refilledAt` (fractional: the refill is continuous). */
  tokens: doublePrecision("tokens").notNull(),
  /** When `tokens` was last brought up to date (the database's clock, so edges' clocks do not matter). */
  refilledAt: timestamp("refilled_at", { withTimezone: true, mode: "date" }).notNull(),
  /** Whether the last request was let through; the upsert's only way to say so in one statement. */
  lastAllowed: boolean("last_allowed").notNull(),
});
