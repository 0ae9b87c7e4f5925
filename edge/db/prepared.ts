import type { Database } from "./client.js";

const preparedByDatabase = new WeakMap<Database, Map<string, unknown>>();

/**
 * Returns the prepared form of a hot query, built once per database handle and `name`. Building a
 * drizzle query costs more CPU than a small indexed read; prepared once, a call only fills
 * placeholders. `name` also names the server-side statement on PostgreSQL (node-postgres and Neon
 * parse it once per connection), so it must be unique per query text across the program.
 *
 * On Node the handle lives as long as the process; on Workers it lives for one request, where this
 * costs what building the query did.
 */
export function preparedQuery<T>(db: Database, name: string, build: (db: Database) => T): T {
  let prepared = preparedByDatabase.get(db);
  if (!prepared) {
    prepared = new Map();
    preparedByDatabase.set(db, prepared);
  }
  const existing = prepared.get(name);
  if (existing !== undefined) return existing as T;
  const query = build(db);
  prepared.set(name, query);
  return query;
}
