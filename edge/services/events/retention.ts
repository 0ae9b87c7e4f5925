import { sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { rowsOf } from "../reconcile/apply.js";

/** Days events, and settled webhook deliveries with their attempts, are kept. */
export const EVENT_RETENTION_DAYS = 30;
/** Rows each table loses per pass at most, so one pass stays short; the next sweep takes the rest. */
const batch = 5_000;

/**
 * One bounded pass: deletes events older than `days`, and deliveries settled (succeeded or failed)
 * that long ago with their attempts. Pending deliveries are never deleted here (they are at most a
 * day old: the retry window ends first). Returns how many rows went.
 */
export async function applyEventRetention(
  db: Database,
  now: Date,
  days = EVENT_RETENTION_DAYS,
): Promise<{ events: number; deliveries: number }> {
  const cutoff = new Date(now.getTime() - days * 86_400_000).toISOString();
  const gone = await db.execute(sql`
    with old_events as (
      delete from events where id in (
        select id from events where created_at < ${cutoff}::timestamptz order by id limit ${batch}
      )
      returning 1
    ),
    old_deliveries as (
      delete from webhook_deliveries where id in (
        select id from webhook_deliveries
        where status <> 'pending' and updated_at < ${cutoff}::timestamptz
        order by updated_at limit ${batch}
      )
      returning id
    ),
    old_attempts as (
      delete from webhook_attempts where delivery_id in (select id from old_deliveries)
    )
    select (select count(*) from old_events)::integer as events, (select count(*) from old_deliveries)::integer as deliveries`);
  const row = rowsOf<{ events: number | string; deliveries: number | string }>(gone)[0];
  return { events: Number(row?.events ?? 0), deliveries: Number(row?.deliveries ?? 0) };
}
