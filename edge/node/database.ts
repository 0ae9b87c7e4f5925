import { mkdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { drizzle as drizzlePg } from "drizzle-orm/node-postgres";
import { migrate as migratePg } from "drizzle-orm/node-postgres/migrator";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { migrate as migratePglite } from "drizzle-orm/pglite/migrator";
import pg from "pg";
import { type DatabaseHandle, markProcessDatabase, schema } from "../db/client.js";
import { openPreparedStatementPGlite } from "../db/pglite-statements.js";

/** The generated migrations, committed under `drizzle/` at the repository root. */
export const migrationsFolder = fileURLToPath(new URL("../../drizzle", import.meta.url));

/** Where a Node edge keeps its data: a PostgreSQL URL, or PGlite in a directory (`memory://` for tests). */
export type NodeDatabaseOptions = { databaseUrl: string } | { pgliteDataDir: string };

/**
 * Opens the Node edge's database and applies every pending migration. PGlite runs in-process
 * (no server needed, statements prepared once per query text); a `databaseUrl` goes through node-postgres.
 */
export async function openNodeDatabase(options: NodeDatabaseOptions): Promise<DatabaseHandle> {
  if ("databaseUrl" in options) {
    const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 10 });
    // An idle pooled connection that the server closes (a restart, a failover, an admin's
    // pg_terminate_backend) is reported here; without a listener it would be an uncaught error that
    // ends the process. The pool has already dropped that client and connects anew on the next query;
    // queries that were running fail on their own and answer 503 DB_UNAVAILABLE.
    pool.on("error", () => {});
    // The same for a connection lost while a request holds it between two queries (inside a
    // transaction): node-postgres emits it on the client, where nobody listens, and the query that
    // follows fails with it anyway.
    pool.on("connect", (client) => {
      client.on("error", () => {});
    });
    const db = drizzlePg({ client: pool, schema });
    try {
      await migratePg(db, { migrationsFolder });
    } catch (err) {
      await pool.end();
      throw err;
    }
    markProcessDatabase(db);
    return {
      db,
      close: () => pool.end(),
      poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    };
  }
  const dataDir = options.pgliteDataDir;
  if (!dataDir.startsWith("memory://")) await mkdir(dataDir, { recursive: true });
  const client = await openPreparedStatementPGlite(dataDir);
  const db = drizzlePglite({ client, schema });
  try {
    await migratePglite(db, { migrationsFolder });
  } catch (err) {
    await client.close();
    throw err;
  }
  markProcessDatabase(db);
  return { db, close: () => client.close() };
}
