import { sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { webhookWantsSql } from "../events/record.js";
import { sandboxEventType } from "../events/types.js";
import type { Transition } from "./plan.js";

/** A row a batched compare-and-set changed, with its new version. */
export interface AppliedTransition {
  id: string;
  version: number;
}

/** The rows of a raw `execute` result, whatever the driver (pg, PGlite and Neon all return `{ rows }`). */
export function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  if (typeof result === "object" && result !== null && "rows" in result && Array.isArray(result.rows)) {
    return result.rows as T[];
  }
  return [];
}

/**
 * Applies many compare-and-sets in ONE statement: each transition changes its row only if the row
 * still has the version the sweep read (so a newer API change always wins), bumps the version, and
 * appends a `sandbox_events` row (actor `reconcile`) for every row it changed, and — for the changes
 * users react to — a public `events` row and its webhook deliveries (edge/services/events), all in
 * the same statement, so an event exists exactly when its change does. The transitions travel
 * as one JSON parameter, so the statement's size does not depend on how many there are.
 * Returns the rows that changed.
 */
export async function applyTransitions(
  /** The database, or the transaction that admitted the transitions (see pause-quota.ts). */
  db: Database,
  transitions: readonly Transition[],
  now: Date,
): Promise<AppliedTransition[]> {
  if (transitions.length === 0) return [];
  const payload = JSON.stringify(
    transitions.map((t) => ({
      id: t.id,
      version: t.version,
      from_state: t.fromState,
      to_state: t.toState,
      stop_reason: t.stopReason,
      end_at: t.endAt?.toISOString() ?? null,
      keep_end_at: t.keepEndAt,
      error: t.error,
      snapshot_bytes: t.snapshotBytes ?? null,
      paused_without_memory: t.pausedWithoutMemory ?? null,
      detail: { rule: t.rule, cause: t.cause },
      event_type: sandboxEventType(t.fromState, t.toState, t.stopReason),
    })),
  );
  const at = now.toISOString();
  const result = await db.execute(sql`
    with v as (
      select * from jsonb_to_recordset(${payload}::jsonb) as x(
        id text, version integer, from_state text, to_state text, stop_reason text,
        end_at timestamptz, keep_end_at boolean, error text, snapshot_bytes bigint,
        paused_without_memory boolean, detail jsonb, event_type text)
    ),
    changed as (
      update sandboxes s set
        state = v.to_state,
        stop_reason = v.stop_reason,
        end_at = case when v.keep_end_at then s.end_at else v.end_at end,
        error = coalesce(v.error, s.error),
        snapshot_bytes = coalesce(v.snapshot_bytes, s.snapshot_bytes),
        paused_without_memory = coalesce(v.paused_without_memory, s.paused_without_memory),
        stopped_at = case when v.to_state in ('stopped', 'error') then ${at}::timestamptz else s.stopped_at end,
        updated_at = ${at}::timestamptz,
        version = s.version + 1
      from v
      where s.id = v.id and s.version = v.version
      returning s.id, s.team_id, s.host_id, s.version, s.state, s.stop_reason, v.from_state, v.detail, v.event_type
    ),
    logged as (
      insert into sandbox_events (sandbox_id, team_id, type, from_state, to_state, actor, detail, created_at)
      select id, team_id, state, from_state, state, 'reconcile', detail, ${at}::timestamptz from changed
    ),
    published as (
      insert into events (team_id, type, sandbox_id, host_id, actor, data, created_at)
      select team_id, event_type, id, host_id, 'reconcile',
        jsonb_build_object('fromState', from_state, 'toState', state)
          || case when stop_reason is null then '{}'::jsonb else jsonb_build_object('stopReason', stop_reason) end
          || detail,
        ${at}::timestamptz
      from changed where event_type is not null
      returning id, team_id, type
    ),
    queued as (
      insert into webhook_deliveries (webhook_id, team_id, event_id, event_type, next_attempt_at)
      select w.id, w.team_id, ev.id, ev.type, now()
      from published ev join webhooks w on ${webhookWantsSql(sql`ev.team_id`, sql`ev.type`)}
    )
    select id, version from changed`);
  return rowsOf<{ id: string; version: number | string }>(result).map((r) => ({
    id: r.id,
    version: Number(r.version),
  }));
}
