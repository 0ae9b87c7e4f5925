import { boolean, doublePrecision, index, pgTable, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";
import { users } from "./users.js";

/**
 * Sign-in sessions. The cookie carries a random token; only its SHA-256 is stored. `expiresAt`
 * slides forward with use, never past `absoluteExpiresAt`. `csrfToken` is the value the
 * `X-CSRF-Token` header must repeat on every state-changing request made with this session.
 * Ids look like `ses_…`.
 */
export const sessions = pgTable(
  "sessions",
  {
    id: text("id").primaryKey(),
    userId: text("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    /** Lower-case hex SHA-256 of the cookie's token. */
    tokenHash: text("token_hash").notNull(),
    csrfToken: text("csrf_token").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
    lastSeenAt: timestamp("last_seen_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
    expiresAt: timestamp("expires_at", { withTimezone: true, mode: "date" }).notNull(),
    absoluteExpiresAt: timestamp("absolute_expires_at", { withTimezone: true, mode: "date" }).notNull(),
    revokedAt: timestamp("revoked_at", { withTimezone: true, mode: "date" }),
    ip: text("ip"),
    userAgent: text("user_agent"),
  },
  (t) => [uniqueIndex("sessions_token_hash_idx").on(t.tokenHash), index("sessions_user_idx").on(t.userId)],
);

/** A row of `sessions`. */
export type SessionRow = typeof sessions.$inferSelect;

/**
 * Token buckets for sign-in attempts, one per `email:<address>` and per `ip:<address>`, refilled and
 * taken in one statement as the API keys' buckets are (edge/services/accounts/login-limit.ts).
 */
export const loginRateBuckets = pgTable("login_rate_buckets", {
  bucket: text("bucket").primaryKey(),
  tokens: doublePrecision("tokens").notNull(),
  refilledAt: timestamp("refilled_at", { withTimezone: true, mode: "date" }).notNull(),
  lastAllowed: boolean("last_allowed").notNull(),
});
