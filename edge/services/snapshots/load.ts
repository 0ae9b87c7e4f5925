import { and, eq, or } from "drizzle-orm";
import { type SnapshotRow, snapshots } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { NotFoundError } from "../errors.js";
import { randomString } from "../ids.js";

/** Snapshot ids: 20 characters of [a-z0-9], the form of E2B's template ids (the SDK sends one as `templateID`). */
export const snapshotIdPattern = /^[a-z0-9]{20}$/;

/** A new snapshot id. */
export function newSnapshotId(): string {
  return randomString(20, "abcdefghijklmnopqrstuvwxyz0123456789");
}

/** Snapshot names: what E2B accepts for a template alias. */
export const snapshotNamePattern = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/**
 * A snapshot of the caller's team, in any state. Another team's answers NOT_FOUND exactly as a
 * missing one, so ids cannot be probed.
 */
export async function loadSnapshot(ctx: TeamContext, snapshotId: string): Promise<SnapshotRow> {
  if (!snapshotIdPattern.test(snapshotId)) throw new NotFoundError("snapshot", snapshotId);
  const [row] = await ctx.db
    .select()
    .from(snapshots)
    .where(and(eq(snapshots.id, snapshotId), eq(snapshots.teamId, ctx.principal.teamId)))
    .limit(1);
  if (!row) throw new NotFoundError("snapshot", snapshotId);
  return row;
}

/** A snapshot sandboxes can start from: of the caller's team and `ready`; anything else is NOT_FOUND. */
export async function loadReadySnapshot(ctx: TeamContext, snapshotId: string): Promise<SnapshotRow> {
  const row = await loadSnapshot(ctx, snapshotId);
  if (row.state !== "ready") throw new NotFoundError("snapshot", snapshotId);
  return row;
}

/**
 * What an E2B `templateID` names among the team's snapshots: a snapshot id (with E2B's optional
 * `:tag` or `team/` prefix dropped) or a live snapshot's name. Null when it names none, so the caller
 * takes it for a template. A deleted or lost snapshot id still resolves (to its row), so creating from
 * it answers 404 rather than "unknown template".
 */
export async function findSnapshotForTemplateId(ctx: TeamContext, templateId: string): Promise<SnapshotRow | null> {
  const bare = (templateId.split("/").at(-1) ?? templateId).split(":")[0] ?? templateId;
  const byId = snapshotIdPattern.test(bare) ? eq(snapshots.id, bare) : undefined;
  const byName = snapshotNamePattern.test(bare) ? eq(snapshots.name, bare) : undefined;
  if (!byId && !byName) return null;
  const rows = await ctx.db
    .select()
    .from(snapshots)
    .where(and(eq(snapshots.teamId, ctx.principal.teamId), or(byId, byName)))
    .limit(10);
  return (
    rows.find((r) => r.id === bare) ??
    rows.find((r) => r.name === bare && (r.state === "ready" || r.state === "creating")) ??
    null
  );
}
