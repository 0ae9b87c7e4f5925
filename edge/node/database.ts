import { mkdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { PGlite } from "@electric-sql/pglite";
import { drizzle as drizzlePg } from "drizzle-orm/node-postgres";
import { migrate as migratePg } from "drizzle-orm/node-postgres/migrator";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { migrate as migratePglite } from "drizzle-orm/pglite/migrator";
import pg from "pg";
import { type DatabaseHandle, schema } from "../db/client.js";

/** The generated migrations, committed under `drizzle/` at the repository root. */
export const migrationsFolder = fileURLToPath(new URL("../../drizzle", import.meta.url));

/** Where a Node edge keeps its data: a PostgreSQL URL, or PGlite in a directory (`memory://` for tests). */
export type NodeDatabaseOptions = { databaseUrl: string } | { pgliteDataDir: string };

/**
 * Opens the Node edge's database and applies every pending migration. PGlite runs in-process
 * (no server needed); a `databaseUrl` goes through node-postgres.
 */
export async function openNodeDatabase(options: NodeDatabaseOptions): Promise<DatabaseHandle> {
  if ("databaseUrl" in options) {
    const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 10 });
    const db = drizzlePg({ client: pool, schema });
    try {
      await migratePg(db, { migrationsFolder });
    } catch (err) {
      await pool.end();
      throw err;
    }
    return { db, close: () => pool.end() };
  }
  const dataDir = options.pgliteDataDir;
  if (!dataDir.startsWith("memory://")) await mkdir(dataDir, { recursive: true });
  const client = await PGlite.create(dataDir);
  const db = drizzlePglite({ client, schema });
  try {
    await migratePglite(db, { migrationsFolder });
  } catch (err) {
    await client.close();
    throw err;
  }
  return { db, close: () => client.close() };
}
