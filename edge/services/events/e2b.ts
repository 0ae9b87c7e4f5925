import { and, asc, desc, eq, inArray } from "drizzle-orm";
import { events, sandboxes } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import type { EventType } from "./types.js";
import { eventIdOf } from "./view.js";

/** E2B's lifecycle event names for ours (`sandbox.lifecycle.<label>`); events without one are not shown there. */
const e2bLabels: Partial<Record<EventType, string>> = {
  "sandbox.created": "created",
  "sandbox.paused": "paused",
  "sandbox.resumed": "resumed",
  "sandbox.updated": "updated",
  "sandbox.killed": "killed",
  "sandbox.timed_out": "killed",
  "sandbox.errored": "killed",
  "snapshot.created": "checkpointed",
};

/** An event in E2B's shape (`GET /events/sandboxes`). */
export interface E2bSandboxEvent {
  version: "v1";
  id: string;
  type: string;
  eventData: Record<string, unknown> | null;
  sandboxId: string;
  sandboxTeamId: string;
  sandboxTemplateId: string;
  sandboxBuildId: string;
  sandboxExecutionId: string;
  timestamp: string;
}

/** Our event types behind E2B's names (`sandbox.lifecycle.killed` is killed, timed out or errored). */
function oursFor(e2bTypes: readonly string[] | undefined): EventType[] {
  const all = Object.keys(e2bLabels) as EventType[];
  if (!e2bTypes || e2bTypes.length === 0) return all;
  const wanted = new Set(e2bTypes.map((t) => t.replace(/^sandbox\.lifecycle\./, "")));
  return all.filter((t) => wanted.has(e2bLabels[t] ?? ""));
}

/**
 * The team's sandbox lifecycle events as E2B's events API lists them: offset paging, newest first
 * unless `orderAsc`, optionally one sandbox's and some types only.
 */
export async function listE2bSandboxEvents(
  ctx: TeamContext,
  query: { sandboxId?: string; offset: number; limit: number; orderAsc: boolean; types?: readonly string[] },
): Promise<E2bSandboxEvent[]> {
  const types = oursFor(query.types);
  if (types.length === 0) return [];
  const rows = await ctx.db
    .select({ event: events, template: sandboxes.template })
    .from(events)
    .leftJoin(sandboxes, eq(sandboxes.id, events.sandboxId))
    .where(
      and(
        eq(events.teamId, ctx.principal.teamId),
        inArray(events.type, types),
        query.sandboxId ? eq(events.sandboxId, query.sandboxId) : undefined,
      ),
    )
    .orderBy(query.orderAsc ? asc(events.id) : desc(events.id))
    .offset(query.offset)
    .limit(query.limit);
  return rows.map(({ event, template }) => {
    const { fromState: _from, toState: _to, ...data } = event.data;
    return {
      version: "v1",
      id: eventIdOf(event.id),
      type: `sandbox.lifecycle.${e2bLabels[event.type as EventType] ?? "updated"}`,
      eventData: Object.keys(data).length > 0 ? data : null,
      sandboxId: event.sandboxId ?? "",
      sandboxTeamId: event.teamId ?? "",
      sandboxTemplateId: template ?? "",
      sandboxBuildId: "",
      sandboxExecutionId: event.sandboxId ?? "",
      timestamp: event.createdAt.toISOString(),
    };
  });
}
