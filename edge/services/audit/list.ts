import { and, desc, eq, gte, lt, type SQL } from "drizzle-orm";
import { type AuditActorType, auditLog } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { ServiceError } from "../errors.js";

/** Filters of `listAudit`. */
export interface ListAuditInput {
  /** Another team's log (instance admins and admin keys only); default: the caller's team. */
  teamId?: string;
  action?: string;
  /** A user id or API key id. */
  actorId?: string;
  since?: Date;
  /** The `nextCursor` of the previous page. */
  cursor?: string;
  limit?: number;
}

/** One audit row as the API shows it. */
export interface AuditView {
  id: string;
  teamId: string | null;
  actor: { type: AuditActorType; id: string | null };
  action: string;
  object: { type: string | null; id: string | null };
  at: string;
  ip: string | null;
  details: Record<string, unknown>;
}

/**
 * The caller's team's audit log, newest first, a page at a time (the cursor is the last row's id).
 * Only admins may read another team's log; for anyone else another team does not exist (NOT_FOUND
 * would leak nothing more than the 403, and the API answers NOT_FOUND for other teams everywhere).
 */
export async function listAudit(
  ctx: TeamContext,
  input: ListAuditInput,
): Promise<{ entries: AuditView[]; nextCursor: string | null }> {
  const teamId = input.teamId ?? ctx.principal.teamId;
  if (teamId !== ctx.principal.teamId && !ctx.principal.isAdmin) {
    throw new ServiceError("NOT_FOUND", `team ${teamId} was not found`);
  }
  const limit = Math.min(Math.max(input.limit ?? 50, 1), 200);
  const conditions: SQL[] = [eq(auditLog.teamId, teamId)];
  if (input.action) conditions.push(eq(auditLog.action, input.action));
  if (input.actorId) conditions.push(eq(auditLog.actorId, input.actorId));
  if (input.since) conditions.push(gte(auditLog.at, input.since));
  if (input.cursor !== undefined) {
    if (!/^[0-9]{1,18}$/.test(input.cursor)) throw new ServiceError("BAD_REQUEST", "cursor is not one this API gave");
    conditions.push(lt(auditLog.id, Number(input.cursor)));
  }
  const rows = await ctx.db
    .select()
    .from(auditLog)
    .where(and(...conditions))
    .orderBy(desc(auditLog.id))
    .limit(limit + 1);
  const page = rows.slice(0, limit);
  return {
    entries: page.map((r) => ({
      id: String(r.id),
      teamId: r.teamId,
      actor: { type: r.actorType, id: r.actorId },
      action: r.action,
      object: { type: r.objectType, id: r.objectId },
      at: r.at.toISOString(),
      ip: r.ip,
      details: r.details,
    })),
    nextCursor: rows.length > limit ? String(page.at(-1)?.id) : null,
  };
}
