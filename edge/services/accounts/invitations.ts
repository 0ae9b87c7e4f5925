import { and, desc, eq, gt, isNull } from "drizzle-orm";
import { invitations, memberships, type TeamRole } from "../../db/schema/index.js";
import { auditActor, recordAudit } from "../audit/record.js";
import type { ServiceContext, TeamContext } from "../context.js";
import { sha256Hex } from "../crypto.js";
import { ConflictError, NotFoundError, ServiceError } from "../errors.js";
import { takeAddressToken } from "./login-limit.js";
import { reachableTeam } from "./members.js";
import { checkPasswordPolicy, hashPassword } from "./password.js";
import { requireManager } from "./roles.js";
import { accountSettings, type NewSession, roleIn, startSession } from "./sessions.js";
import { insertUser, lockUsers } from "./signup.js";
import { emailKey, newAccountId, newSecretToken } from "./tokens.js";

/** An invitation as the API shows it (never with its token, but at creation). */
export interface InvitationView {
  id: string;
  teamId: string;
  email: string;
  role: TeamRole;
  invitedBy: string;
  createdAt: string;
  expiresAt: string;
}

/** A new invitation: the only time its token is shown. */
export interface CreatedInvitation extends InvitationView {
  token: string;
}

/**
 * Invites `email` into a team with `role`, answering a one-time token for the link
 * (`POST /v1/auth/accept-invitation`). Only owners may invite owners. Email delivery is not built
 * yet: the caller hands the link over (docs/accounts.md).
 */
export async function createInvitation(
  ctx: TeamContext,
  id: string,
  input: { email: string; role: TeamRole },
): Promise<CreatedInvitation> {
  const power = requireManager(ctx.principal);
  if (input.role === "owner" && power !== "owner") {
    throw new ServiceError("FORBIDDEN", "only an owner may invite an owner");
  }
  const teamId = await reachableTeam(ctx, id);
  const token = newSecretToken();
  const now = ctx.now();
  const row = {
    id: newAccountId("inv"),
    teamId,
    email: input.email.trim(),
    role: input.role,
    tokenHash: await sha256Hex(token),
    invitedBy: auditActor(ctx.principal).id,
    createdAt: now,
    expiresAt: new Date(now.getTime() + accountSettings(ctx).invitationTtlMs),
  };
  await ctx.db.transaction(async (tx) => {
    await tx.insert(invitations).values(row);
    await recordAudit(
      ctx,
      {
        teamId,
        action: "invitation.create",
        objectType: "invitation",
        objectId: row.id,
        details: { email: row.email, role: row.role },
      },
      tx,
    );
  });
  return { ...view(row), token };
}

function view(row: typeof invitations.$inferSelect | (typeof invitations.$inferInsert & { createdAt: Date })) {
  return {
    id: row.id,
    teamId: row.teamId,
    email: row.email,
    role: row.role,
    invitedBy: row.invitedBy,
    createdAt: row.createdAt.toISOString(),
    expiresAt: row.expiresAt.toISOString(),
  } satisfies InvitationView;
}

/** The team's invitations not yet used, revoked or expired, newest first. */
export async function listInvitations(ctx: TeamContext, id: string): Promise<InvitationView[]> {
  requireManager(ctx.principal);
  const teamId = await reachableTeam(ctx, id);
  const rows = await ctx.db
    .select()
    .from(invitations)
    .where(
      and(
        eq(invitations.teamId, teamId),
        isNull(invitations.acceptedAt),
        isNull(invitations.revokedAt),
        gt(invitations.expiresAt, ctx.now()),
      ),
    )
    .orderBy(desc(invitations.createdAt));
  return rows.map(view);
}

/** Revokes a pending invitation of the team. */
export async function revokeInvitation(ctx: TeamContext, id: string, invitationId: string): Promise<void> {
  requireManager(ctx.principal);
  const teamId = await reachableTeam(ctx, id);
  await ctx.db.transaction(async (tx) => {
    const [row] = await tx
      .update(invitations)
      .set({ revokedAt: ctx.now() })
      .where(and(eq(invitations.id, invitationId), eq(invitations.teamId, teamId), isNull(invitations.acceptedAt)))
      .returning({ id: invitations.id });
    if (!row) throw new NotFoundError("invitation", invitationId);
    await recordAudit(ctx, { teamId, action: "invitation.revoke", objectType: "invitation", objectId: row.id }, tx);
  });
}

/** How an invitation is accepted: by a signed-in user, or by signing up with it. */
export type AcceptAs =
  | { kind: "user"; userId: string; email: string }
  | { kind: "signup"; password: string; userAgent?: string | undefined };

/** What accepting gave. */
export interface Accepted {
  teamId: string;
  role: TeamRole;
  userId: string;
  /** Set when the invitation signed a new user up. */
  session?: NewSession;
}

/**
 * Uses an invitation once: its email must be the signed-in user's (or becomes the new account's),
 * so a forwarded link is of no use to anyone else. A new account made this way joins the inviting
 * team only (it gets no team of its own), whatever WRENN_SIGNUP says. An unknown, used, revoked or
 * expired token answers the same NOT_FOUND.
 */
export async function acceptInvitation(ctx: ServiceContext, token: string, as: AcceptAs): Promise<Accepted> {
  if (as.kind === "signup") checkPasswordPolicy(as.password);
  const tokenHash = await sha256Hex(token);
  let passwordHash: string | undefined;
  if (as.kind === "signup") {
    // The costly hash only for a token that exists, and within the address's bucket.
    await takeAddressToken(ctx);
    const [live] = await ctx.db
      .select({ id: invitations.id })
      .from(invitations)
      .where(and(eq(invitations.tokenHash, tokenHash), isNull(invitations.acceptedAt), isNull(invitations.revokedAt)));
    if (!live) throw new ServiceError("NOT_FOUND", "the invitation link is not valid (used, revoked or expired)");
    passwordHash = await hashPassword(as.password, accountSettings(ctx).passwordIterations);
  }
  return ctx.db.transaction(async (tx) => {
    if (as.kind === "signup") await lockUsers(tx);
    const now = ctx.now();
    const [invitation] = await tx
      .select()
      .from(invitations)
      .where(
        and(
          eq(invitations.tokenHash, tokenHash),
          isNull(invitations.acceptedAt),
          isNull(invitations.revokedAt),
          gt(invitations.expiresAt, now),
        ),
      )
      .for("update");
    if (!invitation) throw new ServiceError("NOT_FOUND", "the invitation link is not valid (used, revoked or expired)");
    let userId: string;
    let session: NewSession | undefined;
    if (as.kind === "user") {
      if (emailKey(as.email) !== emailKey(invitation.email)) {
        throw new ServiceError("FORBIDDEN", "this invitation is for another email address");
      }
      userId = as.userId;
      if (await roleIn(tx, userId, invitation.teamId)) throw new ConflictError("you are already a member of this team");
    } else {
      const user = await insertUser(tx, {
        email: invitation.email,
        passwordHash: passwordHash ?? "",
        isInstanceAdmin: false,
        now,
      });
      userId = user.id;
    }
    await tx
      .insert(memberships)
      .values({ userId, teamId: invitation.teamId, role: invitation.role, createdAt: now, updatedAt: now });
    await tx.update(invitations).set({ acceptedAt: now, acceptedBy: userId }).where(eq(invitations.id, invitation.id));
    if (as.kind === "signup") {
      session = await startSession(ctx, tx, userId, { userAgent: as.userAgent });
      await recordAudit(
        ctx,
        {
          teamId: invitation.teamId,
          actor: { type: "user", id: userId },
          action: "user.signup",
          objectType: "user",
          objectId: userId,
          details: { email: invitation.email, invitationId: invitation.id },
        },
        tx,
      );
    }
    await recordAudit(
      ctx,
      {
        teamId: invitation.teamId,
        actor: { type: "user", id: userId },
        action: "invitation.accept",
        objectType: "invitation",
        objectId: invitation.id,
        details: { role: invitation.role, email: invitation.email },
      },
      tx,
    );
    return { teamId: invitation.teamId, role: invitation.role, userId, ...(session ? { session } : {}) };
  });
}
