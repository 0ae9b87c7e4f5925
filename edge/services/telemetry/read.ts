import { and, asc, desc, eq, gte, inArray, lte, sql } from "drizzle-orm";
import {
  hosts,
  type SandboxRow,
  sandboxEvents,
  sandboxes,
  sandboxLogs,
  sandboxMetrics,
} from "../../db/schema/index.js";
import type { ServiceContext, TeamContext } from "../context.js";
import { BadRequestError } from "../errors.js";
import { agentFor } from "../hosts/target.js";
import { sandboxIdPattern } from "../ids.js";
import { loadSandbox } from "../sandboxes/load.js";
import { collectHostTelemetry } from "./collect.js";

/** One resource sample in E2B's `SandboxMetric` shape (Wrenn's `/v1` answers the same). */
export interface SandboxMetric {
  /** RFC 3339 (deprecated by E2B, still read by the SDK). */
  timestamp: string;
  timestampUnix: number;
  cpuCount: number;
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  memCache: number;
  diskUsed: number;
  diskTotal: number;
}

/** A metrics range in unix seconds, both ends included. */
export interface MetricsRange {
  start?: number | undefined;
  end?: number | undefined;
}

/** The most samples one answer holds (24 h at one every 5 s is 17,280); past it the newest are returned. */
export const METRICS_MAX_SAMPLES = 20_000;
/** Unix seconds beyond this are surely milliseconds passed by mistake (year 5138). */
const MAX_UNIX_SECONDS = 100_000_000_000;
/** How long after a sandbox stopped its host may still hold unpulled entries (the agent keeps them 10 minutes). */
const PULL_AFTER_STOP_MS = 15 * 60_000;

function checkedRange(range: MetricsRange, createdAt: Date, now: Date): { startMs: number; endMs: number } {
  for (const [name, v] of [
    ["start", range.start],
    ["end", range.end],
  ] as const) {
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v < 0) throw new BadRequestError(`${name} must be unix seconds (0 or more)`);
    if (v > MAX_UNIX_SECONDS) {
      throw new BadRequestError(`${name} must be unix seconds, not milliseconds (got ${v})`);
    }
  }
  const start = range.start ?? Math.floor(createdAt.getTime() / 1000);
  const end = range.end ?? Math.floor(now.getTime() / 1000);
  if (range.start !== undefined && range.end !== undefined && start > end) {
    throw new BadRequestError(`start (${start}) is after end (${end})`);
  }
  // `end` names a whole second: every sample whose time floors to it is inside.
  return { startMs: start * 1000, endMs: end * 1000 + 999 };
}

function toMetric(row: typeof sandboxMetrics.$inferSelect): SandboxMetric {
  const ms = row.ts.getTime();
  return {
    timestamp: row.ts.toISOString(),
    timestampUnix: Math.floor(ms / 1000),
    cpuCount: row.cpuCount,
    cpuUsedPct: Math.round(row.cpuUsedPct * 100) / 100,
    memUsed: Number(row.memUsed),
    memTotal: Number(row.memTotal),
    memCache: Number(row.memCache),
    diskUsed: Number(row.diskUsed),
    diskTotal: Number(row.diskTotal),
  };
}

/**
 * Pulls the sandbox's host's telemetry before a read, so the answer holds what the agent sampled up
 * to now rather than up to the last sweep. Best effort: a host that does not answer leaves the
 * stored rows to answer alone.
 */
export async function pullFresh(ctx: ServiceContext, sandbox: SandboxRow): Promise<void> {
  if (!sandbox.hostId) return;
  const stoppedLongAgo =
    (sandbox.state === "stopped" || sandbox.state === "error") &&
    sandbox.stoppedAt !== null &&
    ctx.now().getTime() - sandbox.stoppedAt.getTime() > PULL_AFTER_STOP_MS;
  if (stoppedLongAgo || sandbox.state === "missing") return;
  try {
    const [host] = await ctx.db.select().from(hosts).where(eq(hosts.id, sandbox.hostId)).limit(1);
    if (!host) return;
    await collectHostTelemetry(ctx, await agentFor(ctx, host), host.id, {
      timeoutMs: 3_000,
      maxPages: 4,
      freshMs: 250,
    });
  } catch (err) {
    ctx.logger.debug("pulling telemetry before a read failed; answering from stored rows", {
      sandboxId: sandbox.id,
      err,
    });
  }
}

/**
 * A sandbox's samples in [start, end] (unix seconds; default: from its creation to now), oldest
 * first: raw samples for the last 24 hours, 1-minute averages before that. Also after the sandbox
 * stopped, for as long as they are kept.
 */
export async function sandboxMetricsInRange(
  ctx: TeamContext,
  sandboxId: string,
  range: MetricsRange,
): Promise<SandboxMetric[]> {
  const sandbox = await loadSandbox(ctx, sandboxId);
  const { startMs, endMs } = checkedRange(range, sandbox.createdAt, ctx.now());
  await pullFresh(ctx, sandbox);
  const rows = await ctx.db
    .select()
    .from(sandboxMetrics)
    .where(
      and(
        eq(sandboxMetrics.sandboxId, sandboxId),
        gte(sandboxMetrics.ts, new Date(startMs)),
        lte(sandboxMetrics.ts, new Date(endMs)),
      ),
    )
    .orderBy(desc(sandboxMetrics.ts))
    .limit(METRICS_MAX_SAMPLES);
  return rows.reverse().map(toMetric);
}

/** The most sandboxes one multi-sandbox metrics call may name. */
export const METRICS_MAX_SANDBOXES = 100;

/**
 * The newest sample in the range (default: up to now) of each named sandbox of the caller's team
 * (E2B's `GET /sandboxes/metrics`). Sandboxes of other teams, unknown ones and ones without samples
 * are left out, as E2B leaves out sandboxes that are not running.
 */
export async function latestSandboxMetrics(
  ctx: TeamContext,
  sandboxIds: readonly string[],
  range: MetricsRange,
): Promise<Record<string, SandboxMetric>> {
  const ids = [...new Set(sandboxIds.map((s) => s.trim()).filter((s) => s !== ""))];
  if (ids.length === 0) throw new BadRequestError("sandbox_ids must name at least one sandbox");
  if (ids.length > METRICS_MAX_SANDBOXES) {
    throw new BadRequestError(`sandbox_ids may name at most ${METRICS_MAX_SANDBOXES} sandboxes`);
  }
  const { startMs, endMs } = checkedRange(range, new Date(0), ctx.now());
  const valid = ids.filter((id) => sandboxIdPattern.test(id));
  if (valid.length === 0) return {};
  const owned = await ctx.db
    .select()
    .from(sandboxes)
    .where(and(eq(sandboxes.teamId, ctx.principal.teamId), inArray(sandboxes.id, valid)));
  // One pull per host, not per sandbox.
  const byHost = new Map<string, SandboxRow>();
  for (const s of owned) if (s.hostId && !byHost.has(s.hostId)) byHost.set(s.hostId, s);
  await Promise.all([...byHost.values()].map((s) => pullFresh(ctx, s)));
  if (owned.length === 0) return {};
  const rows = await ctx.db
    .selectDistinctOn([sandboxMetrics.sandboxId])
    .from(sandboxMetrics)
    .where(
      and(
        inArray(
          sandboxMetrics.sandboxId,
          owned.map((s) => s.id),
        ),
        gte(sandboxMetrics.ts, new Date(startMs)),
        lte(sandboxMetrics.ts, new Date(endMs)),
      ),
    )
    .orderBy(sandboxMetrics.sandboxId, desc(sandboxMetrics.ts));
  return Object.fromEntries(rows.map((r) => [r.sandboxId, toMetric(r)]));
}

// ------------------------------------------------------------------------------------------- logs

export type LogLevel = "debug" | "info" | "warn" | "error";
const LEVEL_RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** One entry in E2B's `SandboxLogEntry` shape. */
export interface SandboxLogEntry {
  timestamp: string;
  level: LogLevel;
  message: string;
  fields: Record<string, string>;
}

export interface LogsQuery {
  /** Milliseconds since the epoch: forward returns entries at or after it, backward at or before it. */
  cursor?: number | undefined;
  limit?: number | undefined;
  direction?: "forward" | "backward" | undefined;
  /** The lowest level returned. */
  level?: LogLevel | undefined;
  /** Case-sensitive substring of the message. */
  search?: string | undefined;
}

export const LOGS_MAX_LIMIT = 1000;

/** A lifecycle event of `sandbox_events` as a log entry. */
function eventEntry(e: typeof sandboxEvents.$inferSelect): SandboxLogEntry & { ms: number } {
  const detail = e.detail ?? {};
  const level: LogLevel =
    e.type === "error" || e.toState === "error" ? "error" : e.toState === "missing" ? "warn" : "info";
  const parts = [`sandbox ${e.type}`];
  if (e.fromState && e.toState && e.fromState !== e.toState) parts.push(`(${e.fromState} → ${e.toState})`);
  const cause =
    typeof detail.cause === "string" ? detail.cause : typeof detail.reason === "string" ? detail.reason : "";
  if (cause) parts.push(`: ${cause}`);
  const fields: Record<string, string> = { event: `sandbox_${e.type}`, actor: e.actor };
  if (e.fromState) fields.from_state = e.fromState;
  if (e.toState) fields.to_state = e.toState;
  for (const [k, v] of Object.entries(detail)) {
    if (v === null || v === undefined) continue;
    fields[k] = typeof v === "string" ? v : JSON.stringify(v);
  }
  return { ms: e.createdAt.getTime(), timestamp: e.createdAt.toISOString(), level, message: parts.join(" "), fields };
}

/**
 * A sandbox's log (E2B's `/v2/sandboxes/{id}/logs`): the processes envd started and saw end, with
 * exit codes, merged with the sandbox's lifecycle events (created, running, paused, resumed,
 * timeout, killed, errors), by time. Kept after the sandbox stopped. `forward` (the default) reads
 * from `cursor` (default: the start) oldest first; `backward` from `cursor` (default: now) newest first.
 */
export async function sandboxLogEntries(ctx: TeamContext, sandboxId: string, q: LogsQuery): Promise<SandboxLogEntry[]> {
  const limit = q.limit ?? LOGS_MAX_LIMIT;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > LOGS_MAX_LIMIT) {
    throw new BadRequestError(`limit must be between 1 and ${LOGS_MAX_LIMIT}`);
  }
  if (q.cursor !== undefined && (!Number.isSafeInteger(q.cursor) || q.cursor < 0)) {
    throw new BadRequestError("cursor must be a time in milliseconds since the epoch (0 or more)");
  }
  if (q.search !== undefined && q.search.length > 256) throw new BadRequestError("search is at most 256 characters");
  const sandbox = await loadSandbox(ctx, sandboxId);
  await pullFresh(ctx, sandbox);
  const backward = q.direction === "backward";
  const minRank = LEVEL_RANK[q.level ?? "debug"];
  const levels = (Object.keys(LEVEL_RANK) as LogLevel[]).filter((l) => LEVEL_RANK[l] >= minRank);
  const cursor = q.cursor === undefined ? undefined : new Date(q.cursor);
  const like = q.search ? `%${q.search.replace(/[\\%_]/g, (c) => `\\${c}`)}%` : undefined;

  const logRows = await ctx.db
    .select()
    .from(sandboxLogs)
    .where(
      and(
        eq(sandboxLogs.sandboxId, sandboxId),
        inArray(sandboxLogs.level, levels),
        cursor ? (backward ? lte(sandboxLogs.ts, cursor) : gte(sandboxLogs.ts, cursor)) : undefined,
        like ? sql`${sandboxLogs.message} like ${like}` : undefined,
      ),
    )
    .orderBy(
      backward ? desc(sandboxLogs.ts) : asc(sandboxLogs.ts),
      backward ? desc(sandboxLogs.id) : asc(sandboxLogs.id),
    )
    .limit(limit);
  const eventRows = await ctx.db
    .select()
    .from(sandboxEvents)
    .where(
      and(
        eq(sandboxEvents.sandboxId, sandboxId),
        eq(sandboxEvents.teamId, ctx.principal.teamId),
        cursor ? (backward ? lte(sandboxEvents.createdAt, cursor) : gte(sandboxEvents.createdAt, cursor)) : undefined,
      ),
    )
    .orderBy(
      backward ? desc(sandboxEvents.createdAt) : asc(sandboxEvents.createdAt),
      backward ? desc(sandboxEvents.id) : asc(sandboxEvents.id),
    )
    .limit(limit);
  // Lifecycle events are few; their level and text are made here, so they are filtered here.
  const events = eventRows
    .map(eventEntry)
    .filter((e) => LEVEL_RANK[e.level] >= minRank && (q.search === undefined || e.message.includes(q.search)));
  const logs = logRows.map((r) => ({
    ms: r.ts.getTime(),
    timestamp: r.ts.toISOString(),
    level: (LEVEL_RANK[r.level as LogLevel] === undefined ? "info" : r.level) as LogLevel,
    message: r.message,
    fields: r.fields ?? {},
  }));
  const merged = [...events, ...logs].sort((a, b) => (backward ? b.ms - a.ms : a.ms - b.ms));
  return merged.slice(0, limit).map(({ ms: _ms, ...entry }) => entry);
}
