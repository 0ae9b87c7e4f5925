import { Pool } from "@neondatabase/serverless";
import { drizzle as drizzleNeon } from "drizzle-orm/neon-serverless";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import * as schema from "./schema/index.js";

/** The schema object handed to drizzle; re-exported so drivers and tests share one instance. */
export { schema };

/**
 * The database every service uses, whatever the driver (PGlite, node-postgres or Neon serverless).
 * A transaction handle is assignable to it, so services can take either.
 */
export type Database = PgDatabase<PgQueryResultHKT, typeof schema>;

/** A database for one request (Workers) or for the process (Node); `close` releases what it holds. */
export interface DatabaseHandle {
  db: Database;
  close(): Promise<void>;
  /** The driver's pool sizes now, where it has a pool (node-postgres), for the edge's /metrics. */
  poolStats?: () => { total: number; idle: number; waiting: number };
}

const processDatabases = new WeakSet<Database>();

/**
 * Marks a database as opened once for the whole process (Node's PGlite or node-postgres pool), so
 * the `init` middleware does not treat handles on it as per-request ones to close.
 */
export function markProcessDatabase(db: Database): void {
  processDatabases.add(db);
}

/** Whether `db` lives as long as the process (see `markProcessDatabase`). */
export function isProcessDatabase(db: Database): boolean {
  return processDatabases.has(db);
}

/**
 * Opens a database handle. On Workers it is called once per request (Neon: a Pool must be created,
 * used and closed within one request); on Node it returns the one shared handle.
 */
export type DatabaseFactory = () => DatabaseHandle;

/**
 * A factory for Neon serverless (WebSocket Pool) connections, one Pool per request. Works against
 * Neon and, through a WebSocket proxy, against vanilla PostgreSQL.
 */
export function neonDatabaseFactory(connectionString: string): DatabaseFactory {
  return () => {
    const pool = new Pool({ connectionString });
    const db: Database = drizzleNeon({ client: pool, schema });
    return { db, close: () => pool.end() };
  };
}
