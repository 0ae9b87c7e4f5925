import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { and, eq, inArray, sql } from "drizzle-orm";
import type { PullTelemetryResponse } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import type { AgentClient } from "../../clients/agent.js";
import { sandboxes, sandboxLogs, sandboxMetrics, telemetryCursors } from "../../db/schema/index.js";
import { storeCommandRecords } from "../commands/record.js";
import type { ServiceContext } from "../context.js";

/** Options of one collection from one host. */
export interface CollectOptions {
  /** Deadline of each PullTelemetry call. */
  timeoutMs: number;
  /** Pulls at most this many pages (the agent caps a page at a few thousand entries). */
  maxPages: number;
  /** Skip the pull when the host's cursor moved less than this long ago (reads pull before answering). */
  freshMs?: number;
}

/** What a collection stored. */
export interface CollectOutcome {
  samples: number;
  logs: number;
  /** Command records (issue 22's command history). */
  commands: number;
  pages: number;
}

const INSERT_CHUNK = 1000;
const LEVELS: ReadonlySet<string> = new Set(["debug", "info", "warn", "error"]);

/**
 * Pulls a host's samples and sandbox log entries after the stored cursor (PullTelemetry) into
 * Postgres, and moves the cursor. Called by the reconcile sweep for every host that answered, and
 * before a metrics or logs read for the sandbox's host, so answers are as fresh as the agent's last
 * sample. Two pulls racing insert nothing twice (primary and unique keys) and the cursor only moves
 * forward within one agent epoch. Entries of sandboxes the database does not place on this host
 * are dropped: an agent reports only its own sandboxes.
 */
export async function collectHostTelemetry(
  ctx: ServiceContext,
  agent: AgentClient,
  hostId: string,
  options: CollectOptions,
): Promise<CollectOutcome> {
  const outcome: CollectOutcome = { samples: 0, logs: 0, commands: 0, pages: 0 };
  const [cursor] = await ctx.db.select().from(telemetryCursors).where(eq(telemetryCursors.hostId, hostId)).limit(1);
  if (cursor && options.freshMs !== undefined && ctx.now().getTime() - cursor.updatedAt.getTime() < options.freshMs) {
    return outcome;
  }
  let epoch = cursor?.epoch ?? "";
  let after = BigInt(cursor?.afterSeq ?? 0);
  for (let page = 0; page < options.maxPages; page++) {
    const pulled = await agent.pullTelemetry({ epoch, afterSeq: after }, { timeoutMs: options.timeoutMs });
    outcome.pages++;
    const stored = await storePulled(ctx, hostId, pulled);
    outcome.samples += stored.samples;
    outcome.logs += stored.logs;
    outcome.commands += stored.commands;
    const sameEpoch = pulled.epoch === epoch;
    epoch = pulled.epoch;
    after = pulled.nextAfter;
    await ctx.db
      .insert(telemetryCursors)
      .values({ hostId, epoch, afterSeq: Number(after), updatedAt: ctx.now() })
      .onConflictDoUpdate({
        target: telemetryCursors.hostId,
        set: {
          epoch,
          // Within one epoch the cursor never moves back (a slower concurrent pull may end later).
          afterSeq: sameEpoch
            ? sql`greatest(${telemetryCursors.afterSeq}, ${Number(after)})`
            : sql`${Number(after)}::bigint`,
          updatedAt: ctx.now(),
        },
      });
    if (!pulled.more) break;
  }
  return outcome;
}

async function storePulled(
  ctx: ServiceContext,
  hostId: string,
  pulled: PullTelemetryResponse,
): Promise<{ samples: number; logs: number; commands: number }> {
  const ids = [
    ...new Set([
      ...pulled.samples.map((s) => s.sandboxId),
      ...pulled.logs.map((l) => l.sandboxId),
      ...pulled.commands.map((c) => c.sandboxId),
    ]),
  ];
  if (ids.length === 0) return { samples: 0, logs: 0, commands: 0 };
  const teamOf = new Map(
    (
      await ctx.db
        .select({ id: sandboxes.id, teamId: sandboxes.teamId })
        .from(sandboxes)
        .where(and(eq(sandboxes.hostId, hostId), inArray(sandboxes.id, ids)))
    ).map((r) => [r.id, r.teamId]),
  );
  const placed = new Set(teamOf.keys());
  const samples = pulled.samples
    .filter((s) => placed.has(s.sandboxId) && s.time !== undefined)
    .map((s) => ({
      sandboxId: s.sandboxId,
      resolutionSec: 0,
      ts: new Date(s.time ? timestampMs(s.time) : 0),
      cpuCount: s.cpuCount,
      cpuUsedPct: Number.isFinite(s.cpuUsedPct) ? Math.min(Math.max(s.cpuUsedPct, 0), 100 * 1024) : 0,
      memUsed: Number(s.memUsed),
      memTotal: Number(s.memTotal),
      memCache: Number(s.memCache),
      diskUsed: Number(s.diskUsed),
      diskTotal: Number(s.diskTotal),
      sampleCount: 1,
    }));
  const logs = pulled.logs
    .filter((l) => placed.has(l.sandboxId) && l.time !== undefined)
    .map((l) => ({
      sandboxId: l.sandboxId,
      ts: new Date(l.time ? timestampMs(l.time) : 0),
      level: LEVELS.has(l.level) ? l.level : "info",
      message: l.message.slice(0, 4096),
      fields: l.fields,
      epoch: pulled.epoch,
      seq: Number(l.seq),
    }));
  for (let i = 0; i < samples.length; i += INSERT_CHUNK) {
    await ctx.db
      .insert(sandboxMetrics)
      .values(samples.slice(i, i + INSERT_CHUNK))
      .onConflictDoNothing();
  }
  for (let i = 0; i < logs.length; i += INSERT_CHUNK) {
    await ctx.db
      .insert(sandboxLogs)
      .values(logs.slice(i, i + INSERT_CHUNK))
      .onConflictDoNothing();
  }
  const commands = await storeCommandRecords(ctx.db, pulled.commands, teamOf);
  return { samples: samples.length, logs: logs.length, commands };
}

/**
 * The reconcile sweep's step for one host that answered: pull its telemetry, never failing the
 * sweep (a failed pull leaves the cursor where it was, and the agent's rings keep the entries).
 */
export async function collectDuringSweep(
  ctx: ServiceContext,
  agent: AgentClient,
  hostId: string,
  options: { timeoutMs: number; deadline: number },
): Promise<void> {
  if (performance.now() > options.deadline) return;
  try {
    const got = await collectHostTelemetry(ctx, agent, hostId, { timeoutMs: options.timeoutMs, maxPages: 8 });
    if (got.samples + got.logs + got.commands > 0) ctx.logger.debug("telemetry collected", { hostId, ...got });
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.Unimplemented) {
      // An agent from before PullTelemetry: nothing to collect until it is upgraded.
      ctx.logger.debug("host does not offer telemetry", { hostId });
      return;
    }
    ctx.logger.warn("collecting telemetry failed; the next sweep pulls again", {
      hostId,
      error: err instanceof Error ? err.message : String(err),
    });
  }
}
