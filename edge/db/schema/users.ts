import { sql } from "drizzle-orm";
import { boolean, pgTable, text, uniqueIndex } from "drizzle-orm/pg-core";
import { lifecycleDates } from "./util.js";

/**
 * People who sign in to the dashboard and the API with a session (docs/accounts.md). Ids look like
 * `usr_…`. The email is unique whatever its case; it is stored as given and compared lower-cased.
 */
export const users = pgTable(
  "users",
  {
    id: text("id").primaryKey(),
    email: text("email").notNull(),
    /**
     * Self-describing PBKDF2-SHA256 hash (edge/services/accounts/password.ts): algorithm, work factor,
     * salt and digest in one string, so the work factor can rise without a migration.
     */
    passwordHash: text("password_hash").notNull(),
    /** The first user of an install; holds the admin API's powers when signed in. */
    isInstanceAdmin: boolean("is_instance_admin").notNull().default(false),
    ...lifecycleDates,
  },
  (t) => [uniqueIndex("users_email_lower_idx").on(sql`lower(${t.email})`)],
);

/** A row of `users`. */
export type UserRow = typeof users.$inferSelect;
