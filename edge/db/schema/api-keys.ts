import { sql } from "drizzle-orm";
import { boolean, doublePrecision, index, integer, pgTable, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";
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
    /**
     * Scopes of a non-admin key (admin keys hold every scope). The default is every non-admin scope,
     * so keys made before scopes existed keep their powers; `defaultKeyScopes` is the same list.
     */
    scopes: text("scopes")
      .array()
      .notNull()
      .default(
        sql`'{sandboxes:read,sandboxes:write,sandboxes:exec,files:read,files:write,keys:read,keys:write}'::text[]`,
      ),
    /** After this instant the key is refused (401 API_KEY_EXPIRED); null: never. */
    expiresAt: timestamp("expires_at", { withTimezone: true, mode: "date" }),
    /** Admin-set override of the request rate (tokens per second); null: the edge's default. */
    rateLimitPerSec: doublePrecision("rate_limit_per_sec"),
    /** Admin-set override of the bucket size (burst); null: the edge's default. */
    rateLimitBurst: integer("rate_limit_burst"),
    lastUsedAt: timestamp("last_used_at", { withTimezone: true, mode: "date" }),
    revokedAt: timestamp("revoked_at", { withTimezone: true, mode: "date" }),
    ...lifecycleDates,
  },
  (t) => [uniqueIndex("api_keys_hash_idx").on(t.hash), index("api_keys_team_idx").on(t.teamId)],
);

/** A row of `api_keys`. */
export type ApiKeyRow = typeof apiKeys.$inferSelect;
