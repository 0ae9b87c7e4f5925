import { and, eq, sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { type SandboxRow, sandboxEvents, sandboxes } from "../../db/schema/index.js";
import { recordSandboxChange } from "../events/record.js";

/** Columns a state change may set (never id, team or version, which the helper manages). */
export type SandboxPatch = Partial<
  Omit<typeof sandboxes.$inferInsert, "id" | "teamId" | "version" | "createdAt" | "updatedAt">
>;

/** The event written with a state change. */
export interface TransitionEvent {
  type: string;
  actor?: "api" | "reconcile";
  detail?: Record<string, unknown>;
}

/**
 * Compare-and-set on a sandbox row: applies `patch` only if the row still has the version that was
 * read, bumps the version, and appends a sandbox event in the same transaction. Returns the new row,
 * or null when someone else changed it first (the caller re-reads and decides). `admit`, when given,
 * runs first in the same transaction and may refuse by throwing (a team quota check).
 */
export async function compareAndSet(
  db: Database,
  current: SandboxRow,
  patch: SandboxPatch,
  event: TransitionEvent,
  now: Date,
  admit?: (tx: Database) => Promise<void>,
): Promise<SandboxRow | null> {
  return db.transaction(async (tx) => {
    await admit?.(tx);
    const [row] = await tx
      .update(sandboxes)
      .set({ ...patch, updatedAt: now, version: sql`${sandboxes.version} + 1` })
      .where(and(eq(sandboxes.id, current.id), eq(sandboxes.version, current.version)))
      .returning();
    if (!row) return null;
    await tx.insert(sandboxEvents).values({
      sandboxId: row.id,
      teamId: row.teamId,
      type: event.type,
      fromState: current.state,
      toState: row.state,
      actor: event.actor ?? "api",
      detail: event.detail ?? {},
      createdAt: now,
    });
    // The public event (and its webhook deliveries) commits with the change, or not at all.
    await recordSandboxChange(tx, {
      teamId: row.teamId,
      sandboxId: row.id,
      hostId: row.hostId,
      fromState: current.state,
      toState: row.state,
      stopReason: row.stopReason,
      actor: event.actor ?? "api",
      detail: event.detail ?? {},
      at: now,
      change: event.type,
    });
    return row;
  });
}

/** Reads a sandbox by id without team scoping (for services that already checked ownership). */
export async function reloadSandbox(db: Database, sandboxId: string): Promise<SandboxRow | null> {
  const [row] = await db.select().from(sandboxes).where(eq(sandboxes.id, sandboxId)).limit(1);
  return row ?? null;
}
