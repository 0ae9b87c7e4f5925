import { sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { events } from "../../db/schema/index.js";
import { type EventType, sandboxEventType } from "./types.js";

/** An event to record. */
export interface NewEvent {
  /** Null for operator events (hosts): only admin keys and operator webhooks see them. */
  teamId: string | null;
  type: EventType;
  sandboxId?: string | null;
  hostId?: string | null;
  /** Who caused it: `api` (a request), `reconcile` (the sweep), `host` (an agent's report), `edge`. */
  actor?: string;
  data?: Record<string, unknown>;
  /** Default: the database's clock. */
  at?: Date;
}

/** A recorded event: its id (the cursor of `GET /v1/events`) and when. */
export interface RecordedEvent {
  id: number;
  createdAt: Date;
}

/**
 * The condition under which webhook `w` receives an event of `team`/`type` (SQL): the webhook is
 * enabled, belongs to the event's team (or is an operator webhook and the event has no team), and
 * its list is empty or names the type (exactly, or by a `prefix.*`). One definition for every writer,
 * including the sweep's batched statement.
 */
export function webhookWantsSql(team: ReturnType<typeof sql>, type: ReturnType<typeof sql>) {
  return sql`w.enabled
    and (w.team_id = ${team} or (${team} is null and w.operator))
    and (jsonb_array_length(w.event_types) = 0 or exists (
      select 1 from jsonb_array_elements_text(w.event_types) wanted(pattern)
      where wanted.pattern = ${type}
         or (right(wanted.pattern, 2) = '.*' and left(${type}, length(wanted.pattern) - 1) = left(wanted.pattern, length(wanted.pattern) - 1))
    ))`;
}

/**
 * Records an event and queues one delivery per webhook that wants it, in `tx` — call it inside the
 * transaction that makes the change, so the event exists exactly when the change does and its
 * deliveries survive any restart (the delivery loop sends them later, never this call).
 */
export async function recordEvent(tx: Database, event: NewEvent): Promise<RecordedEvent> {
  const [row] = await tx
    .insert(events)
    .values({
      teamId: event.teamId,
      type: event.type,
      sandboxId: event.sandboxId ?? null,
      hostId: event.hostId ?? null,
      actor: event.actor ?? "api",
      data: event.data ?? {},
      ...(event.at ? { createdAt: event.at } : {}),
    })
    .returning({ id: events.id, createdAt: events.createdAt });
  if (!row) throw new Error("insert into events returned no row");
  await tx.execute(sql`
    insert into webhook_deliveries (webhook_id, team_id, event_id, event_type, next_attempt_at)
    select w.id, w.team_id, ${row.id}, ${event.type}, now()
    from webhooks w
    where ${webhookWantsSql(sql`${event.teamId}::text`, sql`${event.type}::text`)}`);
  return row;
}

/** A sandbox's state change, as the transition helpers know it. */
export interface SandboxChange {
  teamId: string;
  sandboxId: string;
  hostId?: string | null;
  fromState: string | null;
  toState: string;
  stopReason?: string | null;
  actor?: string;
  detail?: Record<string, unknown>;
  at?: Date;
  /** The internal name of the change (`sandbox_events.type`); `timeout_set` and `network_set` are `sandbox.updated`. */
  change?: string;
}

/** Internal changes that keep the state but that users see as an update (E2B's `sandbox.lifecycle.updated`). */
const updates = new Set(["timeout_set", "network_set"]);

/**
 * Records the public event of a sandbox state change, if it is one (see `sandboxEventType`); returns
 * null for changes that are not. Call it in the transaction of the change.
 */
export async function recordSandboxChange(tx: Database, change: SandboxChange): Promise<RecordedEvent | null> {
  const type =
    sandboxEventType(change.fromState, change.toState, change.stopReason) ??
    (change.fromState === change.toState && change.change && updates.has(change.change) ? "sandbox.updated" : null);
  if (!type) return null;
  return recordEvent(tx, {
    teamId: change.teamId,
    type,
    sandboxId: change.sandboxId,
    hostId: change.hostId ?? null,
    actor: change.actor ?? "api",
    data: {
      fromState: change.fromState,
      toState: change.toState,
      ...(change.stopReason ? { stopReason: change.stopReason } : {}),
      ...(type === "sandbox.updated" && change.change ? { change: change.change } : {}),
      ...change.detail,
    },
    ...(change.at ? { at: change.at } : {}),
  });
}

/**
 * The one line the snapshot service calls, in the transaction that records the snapshot.
 */
export function recordSnapshotCreated(
  tx: Database,
  snapshot: {
    teamId: string;
    snapshotId: string;
    sandboxId: string;
    hostId?: string | null;
    data?: Record<string, unknown>;
  },
): Promise<RecordedEvent> {
  return recordEvent(tx, {
    teamId: snapshot.teamId,
    type: "snapshot.created",
    sandboxId: snapshot.sandboxId,
    hostId: snapshot.hostId ?? null,
    data: { snapshotId: snapshot.snapshotId, ...snapshot.data },
  });
}
