import { and, eq, sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { leases } from "../../db/schema/index.js";

/** The lease row that makes sweeps exclusive across every edge instance (Workers isolates, Node processes). */
export const reconcileLeaseName = "reconcile";

/**
 * Takes the named lease for `holder` if it is free or expired, in one statement (an upsert whose
 * update only fires on an expired row). Expiry is judged by the database clock, so edges with
 * skewed clocks agree. Returns whether `holder` now holds it.
 */
export async function acquireLease(db: Database, name: string, holder: string, ttlMs: number): Promise<boolean> {
  const expiresAt = sql`now() + ${`${Math.max(1, Math.round(ttlMs))} milliseconds`}::interval`;
  const rows = await db
    .insert(leases)
    .values({ name, holder, expiresAt })
    .onConflictDoUpdate({
      target: leases.name,
      set: { holder, expiresAt },
      setWhere: sql`${leases.expiresAt} <= now()`,
    })
    .returning({ holder: leases.holder });
  return rows[0]?.holder === holder;
}

/** Gives the lease back early, only if `holder` still holds it (an expired lease may have moved on). */
export async function releaseLease(db: Database, name: string, holder: string): Promise<void> {
  await db.delete(leases).where(and(eq(leases.name, name), eq(leases.holder, holder)));
}
