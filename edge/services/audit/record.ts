import type { Database } from "../../db/client.js";
import { type AuditActorType, auditLog } from "../../db/schema/index.js";
import type { Principal, ServiceContext } from "../context.js";

/** What happened, to what, and anything worth keeping about it. */
export interface AuditEntry {
  /** `<object>.<verb>`, e.g. `api_key.create` (docs/accounts.md lists every action). */
  action: string;
  objectType?: string | null;
  objectId?: string | null;
  details?: Record<string, unknown>;
  /** Default: the caller's team (`principal.teamId`). */
  teamId?: string | null;
  /** Default: the caller (a user for a session, else the API key); anonymous without a principal. */
  actor?: { type: AuditActorType; id: string | null };
}

/** The audit actor of a principal: the signed-in user, else the API key. */
export function auditActor(principal: Principal): { type: AuditActorType; id: string } {
  return principal.user ? { type: "user", id: principal.user.id } : { type: "api_key", id: principal.keyId };
}

/**
 * Appends one row to the audit log. Pass the action's transaction as `db` so the row commits (or
 * rolls back) with the action itself; without it the row is written on its own right after.
 */
export async function recordAudit(ctx: ServiceContext, entry: AuditEntry, db: Database = ctx.db): Promise<void> {
  const principal = "principal" in ctx ? (ctx as ServiceContext & { principal: Principal }).principal : undefined;
  const actor = entry.actor ?? (principal ? auditActor(principal) : { type: "anonymous" as const, id: null });
  await db.insert(auditLog).values({
    teamId: entry.teamId === undefined ? (principal?.teamId ?? null) : entry.teamId,
    actorType: actor.type,
    actorId: actor.id,
    action: entry.action,
    objectType: entry.objectType ?? null,
    objectId: entry.objectId ?? null,
    at: ctx.now(),
    ip: ctx.clientIp ?? null,
    details: entry.details ?? {},
  });
}
