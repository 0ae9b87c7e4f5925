import { sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import type { Logger } from "../../logger.js";
import { applyCommandRetention, DEFAULT_COMMAND_HISTORY_DAYS } from "../commands/retention.js";
import { applyEventRetention } from "../events/retention.js";

/** How long each kind of telemetry is kept (docs/metrics-and-logs.md states the same). */
export interface TelemetryRetention {
  /** Raw samples (every few seconds) are kept this long, then folded into 1-minute averages. */
  rawMs: number;
  /** 1-minute averages are kept this long (counted from their minute). */
  rollupMs: number;
  /** Sandbox log entries are kept this long (counted from their time), also after the sandbox ended. */
  logsMs: number;
  /** Rows one pass folds or deletes per kind at most, so a pass stays short after a long outage. */
  batch: number;
}

export const defaultTelemetryRetention: TelemetryRetention = {
  rawMs: 24 * 3_600_000,
  rollupMs: 7 * 24 * 3_600_000,
  logsMs: 7 * 24 * 3_600_000,
  batch: 20_000,
};

/** The width of a rollup, in seconds. */
export const ROLLUP_SECONDS = 60;

export interface RetentionOutcome {
  /** Raw samples folded into rollups (and deleted). */
  rolledUp: number;
  /** Rollups deleted for age. */
  rollupsPruned: number;
  /** Log entries deleted for age. */
  logsPruned: number;
}

function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  return ((result as { rows?: T[] }).rows ?? []) as T[];
}

/**
 * One bounded retention pass: folds the oldest raw samples past `rawMs` into 1-minute rows (a
 * weighted average by sample count, so a minute split across two passes averages right; totals
 * and counts take the largest), deletes rollups past `rollupMs` and log entries past `logsMs`.
 * Each statement touches at most `batch` rows; the sweep runs it every pass, so a backlog drains
 * over a few passes. Safe to run from two edges at once: the fold deletes the rows it reads in the
 * same statement, so a row is folded once.
 */
export async function applyTelemetryRetention(
  db: Database,
  now: Date,
  retention: TelemetryRetention = defaultTelemetryRetention,
): Promise<RetentionOutcome> {
  const rawCutoff = new Date(now.getTime() - retention.rawMs).toISOString();
  const rollupCutoff = new Date(now.getTime() - retention.rollupMs).toISOString();
  const logsCutoff = new Date(now.getTime() - retention.logsMs).toISOString();
  const folded = await db.execute(sql`
    with picked as (
      delete from sandbox_metrics m
      where (m.sandbox_id, m.resolution_sec, m.ts) in (
        select sandbox_id, resolution_sec, ts from sandbox_metrics
        where resolution_sec = 0 and ts < ${rawCutoff}::timestamptz
        order by ts
        limit ${retention.batch}
      )
      returning m.*
    ),
    minutes as (
      select sandbox_id,
        date_bin(interval '60 seconds', ts, timestamptz '2000-01-01') as minute,
        max(cpu_count) as cpu_count,
        sum(cpu_used_pct * sample_count) / sum(sample_count) as cpu_used_pct,
        round(sum(mem_used::numeric * sample_count) / sum(sample_count))::bigint as mem_used,
        max(mem_total) as mem_total,
        round(sum(mem_cache::numeric * sample_count) / sum(sample_count))::bigint as mem_cache,
        round(sum(disk_used::numeric * sample_count) / sum(sample_count))::bigint as disk_used,
        max(disk_total) as disk_total,
        sum(sample_count)::integer as sample_count
      from picked
      group by sandbox_id, minute
    ),
    merged as (
      insert into sandbox_metrics as r (sandbox_id, resolution_sec, ts, cpu_count, cpu_used_pct, mem_used, mem_total,
        mem_cache, disk_used, disk_total, sample_count)
      select sandbox_id, ${ROLLUP_SECONDS}, minute, cpu_count, cpu_used_pct, mem_used, mem_total, mem_cache, disk_used,
        disk_total, sample_count
      from minutes
      on conflict (sandbox_id, resolution_sec, ts) do update set
        cpu_count = greatest(r.cpu_count, excluded.cpu_count),
        cpu_used_pct = (r.cpu_used_pct * r.sample_count + excluded.cpu_used_pct * excluded.sample_count)
          / (r.sample_count + excluded.sample_count),
        mem_used = round((r.mem_used::numeric * r.sample_count + excluded.mem_used::numeric * excluded.sample_count)
          / (r.sample_count + excluded.sample_count))::bigint,
        mem_total = greatest(r.mem_total, excluded.mem_total),
        mem_cache = round((r.mem_cache::numeric * r.sample_count + excluded.mem_cache::numeric * excluded.sample_count)
          / (r.sample_count + excluded.sample_count))::bigint,
        disk_used = round((r.disk_used::numeric * r.sample_count + excluded.disk_used::numeric * excluded.sample_count)
          / (r.sample_count + excluded.sample_count))::bigint,
        disk_total = greatest(r.disk_total, excluded.disk_total),
        sample_count = r.sample_count + excluded.sample_count
      returning 1
    )
    select (select count(*) from picked)::integer as n`);
  const rollups = await db.execute(sql`
    with gone as (
      delete from sandbox_metrics
      where (sandbox_id, resolution_sec, ts) in (
        select sandbox_id, resolution_sec, ts from sandbox_metrics
        where resolution_sec = ${ROLLUP_SECONDS} and ts < ${rollupCutoff}::timestamptz
        order by ts
        limit ${retention.batch}
      )
      returning 1
    )
    select count(*)::integer as n from gone`);
  const logs = await db.execute(sql`
    with gone as (
      delete from sandbox_logs
      where id in (select id from sandbox_logs where ts < ${logsCutoff}::timestamptz order by ts limit ${retention.batch})
      returning 1
    )
    select count(*)::integer as n from gone`);
  const count = (r: unknown) => Number(rowsOf<{ n: number | string }>(r)[0]?.n ?? 0);
  return { rolledUp: count(folded), rollupsPruned: count(rollups), logsPruned: count(logs) };
}

/** The sweep's retention step, once per sweep: never fails the sweep. */
export async function retentionDuringSweep(ctx: {
  db: Database;
  now(): Date;
  logger: Logger;
  config?: { commandHistoryDays?: number };
}): Promise<void> {
  try {
    const done = await applyTelemetryRetention(ctx.db, ctx.now());
    if (done.rolledUp + done.rollupsPruned + done.logsPruned > 0) ctx.logger.info("telemetry retention", { ...done });
    // The command history (issue 22) is kept per WRENN_COMMAND_HISTORY_DAYS, also after the sandbox ended.
    const days = ctx.config?.commandHistoryDays ?? DEFAULT_COMMAND_HISTORY_DAYS;
    const commandsPruned = await applyCommandRetention(ctx.db, ctx.now(), days);
    if (commandsPruned > 0) ctx.logger.info("command history retention", { commandsPruned });
    // Events and settled webhook deliveries are kept EVENT_RETENTION_DAYS (docs/events-and-webhooks.md).
    const eventsPruned = await applyEventRetention(ctx.db, ctx.now());
    if (eventsPruned.events + eventsPruned.deliveries > 0) ctx.logger.info("event retention", { ...eventsPruned });
  } catch (err) {
    ctx.logger.warn("telemetry retention failed; the next sweep tries again", {
      error: err instanceof Error ? err.message : String(err),
    });
  }
}
