import type { EventRow } from "../../db/schema/index.js";
import { BadRequestError } from "../errors.js";

/** An event as the API, the stream and webhooks show it. */
export interface EventView {
  /** `evt_<n>`: n only grows, so it is also the cursor and the stream's `id`. */
  id: string;
  type: string;
  teamId: string | null;
  sandboxId: string | null;
  hostId: string | null;
  actor: string;
  data: Record<string, unknown>;
  createdAt: string;
}

/** The public id of event row `id`. */
export function eventIdOf(id: number): string {
  return `evt_${id}`;
}

/** The row id of a public event id (`evt_<n>`, or a bare `<n>`); BAD_REQUEST otherwise. */
export function parseEventId(text: string, field = "cursor"): number {
  const match = /^(?:evt_)?(\d{1,15})$/.exec(text.trim());
  if (!match?.[1]) throw new BadRequestError(`${field} must be an event id (evt_<n>)`, { [field]: "not an event id" });
  return Number(match[1]);
}

/** The view of an `events` row. */
export function toEventView(row: EventRow): EventView {
  return {
    id: eventIdOf(row.id),
    type: row.type,
    teamId: row.teamId,
    sandboxId: row.sandboxId,
    hostId: row.hostId,
    actor: row.actor,
    data: row.data,
    createdAt: row.createdAt.toISOString(),
  };
}
