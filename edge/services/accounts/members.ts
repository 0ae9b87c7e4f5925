import { and, asc, count, eq } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { memberships, type TeamRole, teams, users } from "../../db/schema/index.js";
import { recordAudit } from "../audit/record.js";
import type { TeamContext } from "../context.js";
import { ConflictError, NotFoundError, ServiceError } from "../errors.js";
import { requireManager } from "./roles.js";

/** A member as the API shows it. */
export interface MemberView {
  userId: string;
  email: string;
  role: TeamRole;
  joinedAt: string;
}

/**
 * The team a members call is about: `me` or the caller's own team; another team only for admins
 * (instance admins, admin keys). For anyone else another team does not exist.
 */
export async function reachableTeam(ctx: TeamContext, id: string): Promise<string> {
  const teamId = id === "me" ? ctx.principal.teamId : id;
  if (teamId !== ctx.principal.teamId && !ctx.principal.isAdmin) throw new NotFoundError("team", id);
  const [team] = await ctx.db.select({ id: teams.id }).from(teams).where(eq(teams.id, teamId));
  if (!team) throw new NotFoundError("team", id);
  return teamId;
}

/** The team's members, oldest first. */
export async function listMembers(ctx: TeamContext, id: string): Promise<MemberView[]> {
  const teamId = await reachableTeam(ctx, id);
  const rows = await ctx.db
    .select({ userId: users.id, email: users.email, role: memberships.role, joinedAt: memberships.createdAt })
    .from(memberships)
    .innerJoin(users, eq(users.id, memberships.userId))
    .where(eq(memberships.teamId, teamId))
    .orderBy(asc(memberships.createdAt), asc(users.id));
  return rows.map((r) => ({ ...r, joinedAt: r.joinedAt.toISOString() }));
}

async function lockedMembership(tx: Database, teamId: string, userId: string) {
  // Every role change and removal of a team locks the team row first, so two of them cannot each
  // see "another owner is left" and together remove the last one.
  await tx.select({ id: teams.id }).from(teams).where(eq(teams.id, teamId)).for("update");
  const [row] = await tx
    .select({ role: memberships.role, email: users.email })
    .from(memberships)
    .innerJoin(users, eq(users.id, memberships.userId))
    .where(and(eq(memberships.teamId, teamId), eq(memberships.userId, userId)));
  if (!row) throw new NotFoundError("member", userId);
  return row;
}

async function assertAnotherOwner(tx: Database, teamId: string): Promise<void> {
  const [row] = await tx
    .select({ n: count() })
    .from(memberships)
    .where(and(eq(memberships.teamId, teamId), eq(memberships.role, "owner")));
  if ((row?.n ?? 0) <= 1) throw new ConflictError("a team keeps at least one owner; make another member owner first");
}

/**
 * Changes a member's role. Owners (and admins of the instance) may set any role; team admins may
 * move people between admin and member but neither make nor unmake owners. The last owner stays.
 */
export async function setMemberRole(ctx: TeamContext, id: string, userId: string, role: TeamRole): Promise<MemberView> {
  const power = requireManager(ctx.principal);
  const teamId = await reachableTeam(ctx, id);
  return ctx.db.transaction(async (tx) => {
    const current = await lockedMembership(tx, teamId, userId);
    if (power !== "owner" && (current.role === "owner" || role === "owner")) {
      throw new ServiceError("FORBIDDEN", "only an owner may make or unmake owners");
    }
    if (current.role === "owner" && role !== "owner") await assertAnotherOwner(tx, teamId);
    const [row] = await tx
      .update(memberships)
      .set({ role, updatedAt: ctx.now() })
      .where(and(eq(memberships.teamId, teamId), eq(memberships.userId, userId)))
      .returning();
    if (!row) throw new NotFoundError("member", userId);
    await recordAudit(
      ctx,
      {
        teamId,
        action: "member.role_change",
        objectType: "user",
        objectId: userId,
        details: { from: current.role, to: role },
      },
      tx,
    );
    return { userId, email: current.email, role: row.role, joinedAt: row.createdAt.toISOString() };
  });
}

/**
 * Removes a member from a team. Owners and admins may remove others (admins not owners); anyone may
 * leave a team themselves. The last owner cannot be removed or leave.
 */
export async function removeMember(ctx: TeamContext, id: string, userId: string): Promise<void> {
  const self = ctx.principal.user?.id === userId;
  const power = self ? "owner" : requireManager(ctx.principal);
  const teamId = await reachableTeam(ctx, id);
  await ctx.db.transaction(async (tx) => {
    const current = await lockedMembership(tx, teamId, userId);
    if (power !== "owner" && current.role === "owner") {
      throw new ServiceError("FORBIDDEN", "only an owner may remove an owner");
    }
    if (current.role === "owner") await assertAnotherOwner(tx, teamId);
    await tx.delete(memberships).where(and(eq(memberships.teamId, teamId), eq(memberships.userId, userId)));
    await recordAudit(
      ctx,
      { teamId, action: "member.remove", objectType: "user", objectId: userId, details: { role: current.role } },
      tx,
    );
  });
}
