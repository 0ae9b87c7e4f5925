import { Code } from "@connectrpc/connect";
import { and, eq } from "drizzle-orm";
import { agentErrorToServiceError, agentTimeouts, connectCodeOf, isAgentAnswer } from "../../clients/agent.js";
import { hosts, type SnapshotRow, snapshots } from "../../db/schema/index.js";
import type { ServiceContext, TeamContext } from "../context.js";
import { NotFoundError } from "../errors.js";
import { agentFor } from "../hosts/target.js";
import { loadSnapshot } from "./load.js";

/**
 * Deletes a snapshot of the caller's team: the row is marked `deleted` first (so no new sandbox starts
 * from it), then its host forgets it (the agent keeps the files while sandboxes started from it still
 * read them). A snapshot already deleted, or another team's, is NOT_FOUND. When the host cannot be
 * reached the row stays deleted and the reconcile sweep removes the host's copy later.
 */
export async function deleteSnapshot(ctx: TeamContext, snapshotId: string): Promise<void> {
  const row = await loadSnapshot(ctx, snapshotId);
  if (row.state === "deleted") throw new NotFoundError("snapshot", snapshotId);
  const [marked] = await ctx.db
    .update(snapshots)
    .set({ state: "deleted", deletedAt: ctx.now(), updatedAt: ctx.now(), version: row.version + 1 })
    .where(and(eq(snapshots.id, row.id), eq(snapshots.version, row.version)))
    .returning();
  if (!marked) throw new NotFoundError("snapshot", snapshotId);
  await forgetOnHost(ctx, row);
}

/**
 * Asks the snapshot's host to delete its copy. NOT_FOUND there is success (already gone). Any other
 * failure is logged and left to the reconcile sweep, which deletes copies the edge no longer lists:
 * the row is already `deleted`, so failing the call would leave the caller a delete it cannot retry.
 */
export async function forgetOnHost(ctx: ServiceContext, row: SnapshotRow): Promise<void> {
  if (!row.hostId) return;
  const [host] = await ctx.db.select().from(hosts).where(eq(hosts.id, row.hostId)).limit(1);
  if (!host) return;
  const agent = await agentFor(ctx, host);
  try {
    await agent.deleteSnapshot({ snapshotId: row.id }, { timeoutMs: agentTimeouts.default });
  } catch (err) {
    if (connectCodeOf(err) === Code.NotFound) return;
    const failure = agentErrorToServiceError(err, "delete snapshot");
    ctx.logger.warn("delete snapshot: the host kept its copy; the sweep deletes it", {
      snapshotId: row.id,
      code: failure.code,
      unreachable: !isAgentAnswer(err),
      err,
    });
  }
}
