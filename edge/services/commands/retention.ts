import { sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";

/** Days the command history is kept when `WRENN_COMMAND_HISTORY_DAYS` is unset. */
export const DEFAULT_COMMAND_HISTORY_DAYS = 7;
/** Rows one pass deletes at most, so a pass stays short after a long outage (the next sweep goes on). */
const BATCH = 5_000;

/**
 * Deletes commands older than the retention (counted from their end, or their start while they run
 * without end, e.g. a background command whose sandbox is gone). Runs from the reconcile sweep.
 */
export async function applyCommandRetention(db: Database, now: Date, days: number): Promise<number> {
  const cutoff = new Date(now.getTime() - days * 86_400_000).toISOString();
  const result = await db.execute(sql`
    with gone as (
      delete from commands
      where (sandbox_id, command_id) in (
        select sandbox_id, command_id from commands
        where coalesce(ended_at, started_at) < ${cutoff}::timestamptz
        limit ${BATCH}
      )
      returning 1
    )
    select count(*)::integer as n from gone`);
  const rows = Array.isArray(result) ? result : ((result as { rows?: unknown[] }).rows ?? []);
  return Number((rows[0] as { n?: number | string } | undefined)?.n ?? 0);
}
