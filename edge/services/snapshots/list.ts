import { and, desc, eq, inArray, lt, or, type SQL } from "drizzle-orm";
import { type SnapshotStateName, snapshots } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { fromBase64Url, toBase64Url } from "../crypto.js";
import { BadRequestError } from "../errors.js";
import { type SnapshotView, toSnapshotView } from "./view.js";

/** Filters and page of `listSnapshots`. */
export interface ListSnapshotsInput {
  limit: number;
  /** Opaque token from a previous page's `nextToken`. */
  nextToken?: string | undefined;
  /** Only snapshots taken from this sandbox. */
  sandboxId?: string | undefined;
  /** Only the snapshot with this id or name (E2B's `name` filter; a `team/` prefix and `:tag` are dropped). */
  name?: string | undefined;
  /** States to include; default: `ready` (what sandboxes can start from). */
  states?: SnapshotStateName[];
}

/** One page of snapshots, newest first. */
export interface SnapshotPage {
  snapshots: SnapshotView[];
  nextToken: string | null;
}

function encodeCursor(createdAt: Date, id: string): string {
  return toBase64Url(new TextEncoder().encode(JSON.stringify(["s", createdAt.toISOString(), id])));
}

function decodeCursor(token: string): { createdAt: Date; id: string } {
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(fromBase64Url(token)));
    if (Array.isArray(parsed) && parsed[0] === "s" && typeof parsed[1] === "string" && typeof parsed[2] === "string") {
      const createdAt = new Date(parsed[1]);
      if (!Number.isNaN(createdAt.getTime())) return { createdAt, id: parsed[2] };
    }
  } catch {
    // fall through to the error below
  }
  throw new BadRequestError("nextToken is not a token this API issued", { nextToken: "invalid" });
}

/**
 * Lists the caller's team's snapshots, newest first, with keyset pagination on (created_at, id) so
 * pages stay stable while snapshots come and go.
 */
export async function listSnapshots(ctx: TeamContext, input: ListSnapshotsInput): Promise<SnapshotPage> {
  const conditions: SQL[] = [
    eq(snapshots.teamId, ctx.principal.teamId),
    inArray(snapshots.state, input.states && input.states.length > 0 ? input.states : ["ready"]),
  ];
  if (input.sandboxId !== undefined) conditions.push(eq(snapshots.sourceSandboxId, input.sandboxId));
  if (input.name !== undefined) {
    const bare = (input.name.split("/").at(-1) ?? input.name).split(":")[0] ?? input.name;
    const named = or(eq(snapshots.id, bare), eq(snapshots.name, bare));
    if (named) conditions.push(named);
  }
  if (input.nextToken) {
    const cursor = decodeCursor(input.nextToken);
    const after = or(
      lt(snapshots.createdAt, cursor.createdAt),
      and(eq(snapshots.createdAt, cursor.createdAt), lt(snapshots.id, cursor.id)),
    );
    if (after) conditions.push(after);
  }
  const rows = await ctx.db
    .select()
    .from(snapshots)
    .where(and(...conditions))
    .orderBy(desc(snapshots.createdAt), desc(snapshots.id))
    .limit(input.limit + 1);
  const page = rows.slice(0, input.limit);
  const last = page.at(-1);
  return {
    snapshots: page.map(toSnapshotView),
    nextToken: rows.length > input.limit && last ? encodeCursor(last.createdAt, last.id) : null,
  };
}
