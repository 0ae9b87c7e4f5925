import { and, asc, desc, eq, gt, gte, inArray, isNull, lt, lte, or, type SQL } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { events } from "../../db/schema/index.js";
import type { Principal, TeamContext } from "../context.js";
import { type EventView, eventIdOf, parseEventId, toEventView } from "./view.js";

/** Filters of `GET /v1/events` and of the stream. */
export interface EventFilter {
  types?: readonly string[];
  sandboxId?: string;
  since?: Date;
  until?: Date;
}

/** A page request: after (ascending) or before (descending) the cursor. */
export interface EventPage extends EventFilter {
  cursor?: string;
  limit: number;
  order: "asc" | "desc";
}

/** One page of events and the cursor of the next (absent on the last page). */
export interface EventList {
  events: EventView[];
  nextCursor?: string;
}

/**
 * The conditions every read of events applies: the caller's team — plus operator events (no team)
 * for admin keys — and the filters.
 */
export function eventConditions(principal: Principal, filter: EventFilter): SQL[] {
  const team = principal.isAdmin
    ? or(eq(events.teamId, principal.teamId), isNull(events.teamId))
    : eq(events.teamId, principal.teamId);
  const conditions: SQL[] = [];
  if (team) conditions.push(team);
  if (filter.types && filter.types.length > 0) conditions.push(inArray(events.type, [...filter.types]));
  if (filter.sandboxId) conditions.push(eq(events.sandboxId, filter.sandboxId));
  if (filter.since) conditions.push(gte(events.createdAt, filter.since));
  if (filter.until) conditions.push(lte(events.createdAt, filter.until));
  return conditions;
}

/** Lists the team's events, newest first by default, `limit` at a time with a cursor. */
export async function listEvents(ctx: TeamContext, page: EventPage): Promise<EventList> {
  const conditions = eventConditions(ctx.principal, page);
  if (page.cursor !== undefined) {
    const id = parseEventId(page.cursor);
    conditions.push(page.order === "asc" ? gt(events.id, id) : lt(events.id, id));
  }
  const rows = await ctx.db
    .select()
    .from(events)
    .where(and(...conditions))
    .orderBy(page.order === "asc" ? asc(events.id) : desc(events.id))
    .limit(page.limit + 1);
  const more = rows.length > page.limit;
  const shown = rows.slice(0, page.limit);
  const last = shown.at(-1);
  return { events: shown.map(toEventView), ...(more && last ? { nextCursor: eventIdOf(last.id) } : {}) };
}

/** Events after row id `afterId` (ascending), for the stream. */
export async function eventsAfter(
  db: Database,
  principal: Principal,
  filter: EventFilter,
  afterId: number,
  limit: number,
): Promise<EventView[]> {
  const rows = await db
    .select()
    .from(events)
    .where(and(...eventConditions(principal, filter), gt(events.id, afterId)))
    .orderBy(asc(events.id))
    .limit(limit);
  return rows.map(toEventView);
}

/** The id of the newest event the caller may see (0 when none): where a stream without Last-Event-ID starts. */
export async function latestEventId(ctx: TeamContext, filter: EventFilter): Promise<number> {
  const [row] = await ctx.db
    .select({ id: events.id })
    .from(events)
    .where(and(...eventConditions(ctx.principal, filter)))
    .orderBy(desc(events.id))
    .limit(1);
  return row?.id ?? 0;
}
