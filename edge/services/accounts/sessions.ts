import { and, asc, eq, gt, isNull, sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { memberships, sessions, type TeamRole, teams, users } from "../../db/schema/index.js";
import type { ServiceContext } from "../context.js";
import { sha256Hex } from "../crypto.js";
import { defaultAccountSettings } from "./settings.js";
import { newAccountId, newSecretToken } from "./tokens.js";

/** What the browser gets at sign-in: the cookie's token and the CSRF token, each shown only now. */
export interface NewSession {
  id: string;
  token: string;
  csrfToken: string;
  expiresAt: Date;
}

/** A live session with its user. */
export interface ActiveSession {
  id: string;
  csrfToken: string;
  expiresAt: Date;
  user: { id: string; email: string; isInstanceAdmin: boolean };
}

/** The account settings in force. */
export function accountSettings(ctx: ServiceContext) {
  return ctx.config.accounts ?? defaultAccountSettings;
}

/** Starts a session for `userId` (inside the sign-in's transaction when `db` is one). */
export async function startSession(
  ctx: ServiceContext,
  db: Database,
  userId: string,
  meta: { userAgent?: string | undefined },
): Promise<NewSession> {
  const settings = accountSettings(ctx);
  const now = ctx.now();
  const token = newSecretToken();
  const csrfToken = newSecretToken();
  const id = newAccountId("ses");
  const expiresAt = new Date(now.getTime() + settings.sessionIdleMs);
  await db.insert(sessions).values({
    id,
    userId,
    tokenHash: await sha256Hex(token),
    csrfToken,
    createdAt: now,
    lastSeenAt: now,
    expiresAt,
    absoluteExpiresAt: new Date(now.getTime() + settings.sessionAbsoluteMs),
    ip: ctx.clientIp ?? null,
    userAgent: meta.userAgent?.slice(0, 512) ?? null,
  });
  return { id, token, csrfToken, expiresAt };
}

/** A sliding session is pushed forward at most this often, so most requests only read. */
const slideResolutionMs = 60_000;

/**
 * The live session a cookie token names, or null (unknown, revoked, idle too long, or past its
 * absolute end). Pushes its idle end forward, never past the absolute one.
 */
export async function findSession(ctx: ServiceContext, token: string): Promise<ActiveSession | null> {
  const now = ctx.now();
  const [row] = await ctx.db
    .select({
      id: sessions.id,
      csrfToken: sessions.csrfToken,
      expiresAt: sessions.expiresAt,
      absoluteExpiresAt: sessions.absoluteExpiresAt,
      lastSeenAt: sessions.lastSeenAt,
      userId: users.id,
      email: users.email,
      isInstanceAdmin: users.isInstanceAdmin,
    })
    .from(sessions)
    .innerJoin(users, eq(users.id, sessions.userId))
    .where(
      and(
        eq(sessions.tokenHash, await sha256Hex(token)),
        isNull(sessions.revokedAt),
        gt(sessions.expiresAt, now),
        gt(sessions.absoluteExpiresAt, now),
      ),
    )
    .limit(1);
  if (!row) return null;
  let expiresAt = row.expiresAt;
  if (now.getTime() - row.lastSeenAt.getTime() > slideResolutionMs) {
    const slid = Math.min(now.getTime() + accountSettings(ctx).sessionIdleMs, row.absoluteExpiresAt.getTime());
    expiresAt = new Date(slid);
    await ctx.db.update(sessions).set({ lastSeenAt: now, expiresAt }).where(eq(sessions.id, row.id));
  }
  return {
    id: row.id,
    csrfToken: row.csrfToken,
    expiresAt,
    user: { id: row.userId, email: row.email, isInstanceAdmin: row.isInstanceAdmin },
  };
}

/** Ends a session (sign-out); returns whether it was live. */
export async function revokeSession(ctx: ServiceContext, db: Database, sessionId: string): Promise<boolean> {
  const ended = await db
    .update(sessions)
    .set({ revokedAt: ctx.now() })
    .where(and(eq(sessions.id, sessionId), isNull(sessions.revokedAt)))
    .returning({ id: sessions.id });
  return ended.length > 0;
}

/** A user's teams and roles, oldest membership first (the first is the default team). */
export async function teamsOf(
  db: Database,
  userId: string,
): Promise<Array<{ teamId: string; name: string; role: TeamRole }>> {
  return db
    .select({ teamId: memberships.teamId, name: teams.name, role: memberships.role })
    .from(memberships)
    .innerJoin(teams, eq(teams.id, memberships.teamId))
    .where(eq(memberships.userId, userId))
    .orderBy(asc(memberships.createdAt), asc(memberships.teamId));
}

/** The user's role in one team, or null when not a member. */
export async function roleIn(db: Database, userId: string, teamId: string): Promise<TeamRole | null> {
  const [row] = await db
    .select({ role: memberships.role })
    .from(memberships)
    .where(and(eq(memberships.userId, userId), eq(memberships.teamId, teamId)));
  return row?.role ?? null;
}

/** The user row by email, whatever its case. */
export async function userByEmail(db: Database, email: string) {
  const [row] = await db
    .select()
    .from(users)
    .where(sql`lower(${users.email}) = ${email.trim().toLowerCase()}`)
    .limit(1);
  return row ?? null;
}

/** A user's public fields. */
export async function userById(db: Database, userId: string) {
  const [row] = await db
    .select({ id: users.id, email: users.email, isInstanceAdmin: users.isInstanceAdmin })
    .from(users)
    .where(eq(users.id, userId));
  if (!row) throw new Error(`user ${userId} vanished`);
  return row;
}
