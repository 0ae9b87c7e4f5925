import { and, desc, eq, inArray, lt, or, type SQL, sql } from "drizzle-orm";
import { activeSandboxStates, type SandboxStateName, sandboxes } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { fromBase64Url, toBase64Url } from "../crypto.js";
import { BadRequestError } from "../errors.js";
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
}

/** One page of sandboxes, newest first. */
export interface SandboxPage {
  sandboxes: SandboxView[];
  nextToken: string | null;
}

interface Cursor {
  createdAt: string;
  id: string;
}

function encodeCursor(cursor: Cursor): string {
  return toBase64Url(new TextEncoder().encode(JSON.stringify([cursor.createdAt, cursor.id])));
}

function decodeCursor(token: string): Cursor {
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(fromBase64Url(token)));
    if (Array.isArray(parsed) && typeof parsed[0] === "string" && typeof parsed[1] === "string") {
      if (!Number.isNaN(Date.parse(parsed[0]))) return { createdAt: parsed[0], id: parsed[1] };
    }
  } catch {
    // fall through to the error below
  }
  throw new BadRequestError("nextToken is not a token this API issued", { nextToken: "invalid" });
}

/**
 * Lists the caller's team's sandboxes, newest first, filtered by state and metadata, with keyset
 * pagination on (created_at, id) so pages stay stable while sandboxes come and go.
 */
export async function listSandboxes(ctx: TeamContext, input: ListSandboxesInput): Promise<SandboxPage> {
  const states = input.states.length > 0 ? input.states : [...activeSandboxStates];
  const conditions: SQL[] = [eq(sandboxes.teamId, ctx.principal.teamId), inArray(sandboxes.state, states)];
  if (Object.keys(input.metadata).length > 0) {
    conditions.push(sql`${sandboxes.metadata} @> ${JSON.stringify(input.metadata)}::jsonb`);
  }
  if (input.nextToken) {
    const cursor = decodeCursor(input.nextToken);
    const at = new Date(cursor.createdAt);
    const after = or(lt(sandboxes.createdAt, at), and(eq(sandboxes.createdAt, at), lt(sandboxes.id, cursor.id)));
    if (after) conditions.push(after);
  }
  const rows = await ctx.db
    .select()
    .from(sandboxes)
    .where(and(...conditions))
    .orderBy(desc(sandboxes.createdAt), desc(sandboxes.id))
    .limit(input.limit + 1);
  const page = rows.slice(0, input.limit);
  const last = page.at(-1);
  const nextToken =
    rows.length > input.limit && last ? encodeCursor({ createdAt: last.createdAt.toISOString(), id: last.id }) : null;
  return { sandboxes: page.map(toSandboxView), nextToken };
}
