import { boolean, index, pgTable, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";
import { teams } from "./teams.js";
import { lifecycleDates } from "./util.js";

/**
 * API keys. Only the SHA-256 hash of the secret is stored; `prefix` (the first characters of the
 * secret) lets people tell keys apart in listings. Ids look like `key_…`.
 */
export const apiKeys = pgTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    teamId: text("team_id")
      .notNull()
      .references(() => teams.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    prefix: text("prefix").notNull(),
    /** Lower-case hex SHA-256 of the whole secret. */
    hash: text("hash").notNull(),
    /** Admin keys may manage hosts and other teams' keys. */
    isAdmin: boolean("is_admin").notNull().default(false),
    lastUsedAt: timestamp("last_used_at", { withTimezone: true, mode: "date" }),
    revokedAt: timestamp("revoked_at", { withTimezone: true, mode: "date" }),
    ...lifecycleDates,
  },
  (t) => [uniqueIndex("api_keys_hash_idx").on(t.hash), index("api_keys_team_idx").on(t.teamId)],
);

/** A row of `api_keys`. */
export type ApiKeyRow = typeof apiKeys.$inferSelect;
