import { and, asc, desc, eq, gt, inArray, lt, or, type SQL, sql } from "drizzle-orm";
import { activeSandboxStates, type SandboxStateName, sandboxes } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { fromBase64Url, toBase64Url } from "../crypto.js";
import { BadRequestError } from "../errors.js";
import { repairExpiredOfTeam } from "./expiry.js";
import { type SandboxView, toSandboxView } from "./view.js";

/** Filters and page of `listSandboxes`. */
export interface ListSandboxesInput {
  /** States to include; empty means every state but `stopped` and `error`. */
  states: SandboxStateName[];
  /** Every pair must match the sandbox's metadata. */
  metadata: Record<string, string>;
  limit: number;
  /** Opaque token from a previous page's `nextToken`. */
  nextToken?: string;
  /** Newest first (default) or oldest first, by creation time. */
  order?: "asc" | "desc";
  /** Only sandboxes of this template. */
  template?: string;
  /** Only sandboxes started (or, not yet started, created) after this instant. */
  startedAfter?: Date;
}

/** One page of sandboxes, in the order asked for. */
export interface SandboxPage {
  sandboxes: SandboxView[];
  nextToken: string | null;
}

interface Cursor {
  createdAt: string;
  id: string;
  order: "asc" | "desc";
}

function encodeCursor(cursor: Cursor): string {
  return toBase64Url(new TextEncoder().encode(JSON.stringify([cursor.createdAt, cursor.id, cursor.order])));
}

/** Tokens made before `order` existed carry two fields and were newest first. */
function decodeCursor(token: string): Cursor {
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(fromBase64Url(token)));
    if (Array.isArray(parsed) && typeof parsed[0] === "string" && typeof parsed[1] === "string") {
      const order = parsed[2] ?? "desc";
      if (!Number.isNaN(Date.parse(parsed[0])) && (order === "asc" || order === "desc")) {
        return { createdAt: parsed[0], id: parsed[1], order };
      }
    }
  } catch {
    // fall through to the error below
  }
  throw new BadRequestError("nextToken is not a token this API issued", { nextToken: "invalid" });
}

/**
 * Lists the caller's team's sandboxes, newest (or oldest) first, filtered by state, metadata, template
 * and start time in the query itself (so a page holds `limit` sandboxes when that many match), with
 * keyset pagination on (created_at, id) so pages stay stable while sandboxes come and go.
 */
export async function listSandboxes(ctx: TeamContext, input: ListSandboxesInput): Promise<SandboxPage> {
  const order = input.order ?? "desc";
  // Rows past their end time first follow their hosts, so the state filter sees what the timeout did.
  await repairExpiredOfTeam(ctx, ctx.principal.teamId);
  const states = input.states.length > 0 ? input.states : [...activeSandboxStates];
  const conditions: SQL[] = [eq(sandboxes.teamId, ctx.principal.teamId), inArray(sandboxes.state, states)];
  if (Object.keys(input.metadata).length > 0) {
    conditions.push(sql`${sandboxes.metadata} @> ${JSON.stringify(input.metadata)}::jsonb`);
  }
  if (input.template !== undefined) conditions.push(eq(sandboxes.template, input.template));
  if (input.startedAfter !== undefined) {
    conditions.push(
      sql`coalesce(${sandboxes.startedAt}, ${sandboxes.createdAt}) > ${input.startedAfter.toISOString()}`,
    );
  }
  if (input.nextToken) {
    const cursor = decodeCursor(input.nextToken);
    if (cursor.order !== order) {
      throw new BadRequestError(
        `nextToken belongs to a list in ${cursor.order} order; ask with order=${cursor.order}`,
        {
          nextToken: "order differs",
        },
      );
    }
    const at = new Date(cursor.createdAt);
    const beyond = order === "asc" ? gt : lt;
    const after = or(
      beyond(sandboxes.createdAt, at),
      and(eq(sandboxes.createdAt, at), beyond(sandboxes.id, cursor.id)),
    );
    if (after) conditions.push(after);
  }
  const direction = order === "asc" ? asc : desc;
  const rows = await ctx.db
    .select()
    .from(sandboxes)
    .where(and(...conditions))
    .orderBy(direction(sandboxes.createdAt), direction(sandboxes.id))
    .limit(input.limit + 1);
  const page = rows.slice(0, input.limit);
  const last = page.at(-1);
  const nextToken =
    rows.length > input.limit && last
      ? encodeCursor({ createdAt: last.createdAt.toISOString(), id: last.id, order })
      : null;
  return { sandboxes: page.map(toSandboxView), nextToken };
}
