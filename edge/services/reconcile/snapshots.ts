import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { and, eq, inArray } from "drizzle-orm";
import type { AgentClient } from "../../clients/agent.js";
import { type SnapshotRow, snapshots } from "../../db/schema/index.js";
import type { ServiceContext } from "../context.js";
import type { ReconcileOptions } from "./options.js";

/** What one sweep did to one host's snapshots. */
export interface SnapshotSweepOutcome {
  /** `ready` rows the host no longer reports, now `lost`. */
  lost: number;
  /** `creating` rows older than `stuckAfterMs` (the edge died mid-create), now `error`. */
  abandoned: number;
  /** Copies on the host the edge does not want (deleted, failed, or unknown past the grace), deleted there. */
  deletedOnHost: number;
  /** Whether the host answered ListSnapshots (an agent without snapshots answers UNIMPLEMENTED: skipped). */
  answered: boolean;
}

/**
 * Converges one host's snapshots with its rows, after the sandbox sweep: a `ready` snapshot the host
 * no longer reports is `lost` (sandboxes cannot start from it; GET shows why); a `creating` row past
 * `stuckAfterMs` (its create died with the edge) is `error`; a copy the host holds whose row is
 * deleted, failed or lost — or that has no row once `orphanGraceMs` passed since the host took it (a
 * create the edge never recorded) — is deleted on the host. Rows are read before the host is asked
 * and changed by compare-and-set on their version, so a create or delete racing the sweep wins.
 */
export async function reconcileHostSnapshots(
  ctx: ServiceContext,
  agent: AgentClient,
  hostId: string,
  options: Pick<ReconcileOptions, "hostTimeoutMs" | "actionTimeoutMs" | "stuckAfterMs" | "orphanGraceMs">,
): Promise<SnapshotSweepOutcome> {
  const outcome: SnapshotSweepOutcome = { lost: 0, abandoned: 0, deletedOnHost: 0, answered: false };
  const rows = await ctx.db
    .select()
    .from(snapshots)
    .where(and(eq(snapshots.hostId, hostId), inArray(snapshots.state, ["creating", "ready"])));
  let listed: Awaited<ReturnType<AgentClient["listSnapshots"]>>;
  try {
    listed = await agent.listSnapshots({}, { timeoutMs: options.hostTimeoutMs });
  } catch (err) {
    const code = ConnectError.from(err).code;
    if (code !== Code.Unimplemented) {
      ctx.logger.warn("snapshot sweep: the host did not list its snapshots", { hostId, error: String(err) });
    }
    return outcome;
  }
  outcome.answered = true;
  const now = ctx.now();
  const onHost = new Map(listed.snapshots.map((s) => [s.snapshotId, s]));
  const known = new Map<string, SnapshotRow>(rows.map((r) => [r.id, r]));

  for (const row of rows) {
    if (row.state === "ready" && !onHost.has(row.id)) {
      if (await settle(ctx, row, { state: "lost", error: `host ${hostId} no longer holds this snapshot` }, now)) {
        outcome.lost++;
      }
    } else if (row.state === "creating" && now.getTime() - row.createdAt.getTime() > options.stuckAfterMs) {
      const settled = await settle(ctx, row, { state: "error", error: "the create did not finish" }, now);
      if (settled) {
        outcome.abandoned++;
        known.delete(row.id);
      }
    }
  }

  // Copies the host holds that no live row wants: rows deleted/failed/lost, or none at all.
  const strays = [...onHost.keys()].filter((id) => !known.has(id));
  const strayRows =
    strays.length === 0
      ? []
      : await ctx.db.select({ id: snapshots.id }).from(snapshots).where(inArray(snapshots.id, strays));
  const hasRow = new Set(strayRows.map((r) => r.id));
  for (const id of strays) {
    const info = onHost.get(id);
    const takenAt = info?.createdAt ? timestampDate(info.createdAt).getTime() : 0;
    // No row yet: a create whose row is being written (or whose edge died before the insert).
    if (!hasRow.has(id) && now.getTime() - takenAt < options.orphanGraceMs) continue;
    try {
      await agent.deleteSnapshot({ snapshotId: id }, { timeoutMs: options.actionTimeoutMs });
      outcome.deletedOnHost++;
    } catch (err) {
      if (ConnectError.from(err).code !== Code.NotFound) {
        ctx.logger.warn("snapshot sweep: delete on the host failed", { hostId, snapshotId: id, error: String(err) });
      }
    }
  }
  if (outcome.lost + outcome.abandoned + outcome.deletedOnHost > 0)
    ctx.logger.info("snapshot sweep", { hostId, ...outcome });
  return outcome;
}

async function settle(
  ctx: ServiceContext,
  row: SnapshotRow,
  patch: Partial<typeof snapshots.$inferInsert>,
  now: Date,
): Promise<boolean> {
  const [updated] = await ctx.db
    .update(snapshots)
    .set({ ...patch, version: row.version + 1, updatedAt: now })
    .where(and(eq(snapshots.id, row.id), eq(snapshots.version, row.version)))
    .returning({ id: snapshots.id });
  return updated !== undefined;
}
