import { eq } from "drizzle-orm";
import { users } from "../../db/schema/index.js";
import { recordAudit } from "../audit/record.js";
import type { ServiceContext } from "../context.js";
import { badCredentials, LoginRateLimitedError } from "./errors.js";
import { takeLoginToken } from "./login-limit.js";
import { hashPassword, needsRehash, passwordPolicy, spendVerificationTime, verifyPassword } from "./password.js";
import { accountSettings, type NewSession, revokeSession, startSession, teamsOf, userByEmail } from "./sessions.js";
import { emailKey } from "./tokens.js";

/** Input of `logIn`. */
export interface LogInInput {
  email: string;
  password: string;
  userAgent?: string | undefined;
}

/**
 * Signs a user in and starts a session. A wrong password and an unknown email give the same answer
 * after the same work (a PBKDF2 run at the current factor), so neither the body nor the time tells
 * which emails have accounts. Attempts are limited per email and per client address before any
 * hashing, so a flood costs one statement each. A hash made with a lower work factor is replaced
 * by one at the current factor once the password has been seen to match. Every outcome but a
 * rate-limited one is audited.
 */
export async function logIn(ctx: ServiceContext, input: LogInInput): Promise<{ userId: string; session: NewSession }> {
  const settings = accountSettings(ctx);
  const email = emailKey(input.email);
  for (const [bucket, limit] of [
    [`email:${email}`, settings.loginLimitPerEmail],
    ...(ctx.clientIp ? [[`ip:${ctx.clientIp}`, settings.loginLimitPerIp] as const] : []),
  ] as const) {
    const wait = await takeLoginToken(ctx.db, bucket, limit);
    if (wait !== null) throw new LoginRateLimitedError(wait);
  }
  // Overlong input is not worth hashing (and must not cost more than a real attempt).
  const password = input.password.slice(0, passwordPolicy.maxLength * 4);
  const user = await userByEmail(ctx.db, email);
  const defaultTeamId = user ? ((await teamsOf(ctx.db, user.id))[0]?.teamId ?? null) : null;
  if (!user || !(await verifyPassword(password, user.passwordHash))) {
    if (!user) await spendVerificationTime(password, settings.passwordIterations);
    await recordAudit(ctx, {
      teamId: defaultTeamId,
      actor: { type: "anonymous", id: null },
      action: "auth.login_failed",
      objectType: user ? "user" : null,
      objectId: user?.id ?? null,
      details: { email, reason: user ? "wrong password" : "unknown email" },
    });
    throw badCredentials();
  }
  if (needsRehash(user.passwordHash, settings.passwordIterations)) {
    const upgraded = await hashPassword(password, settings.passwordIterations);
    await ctx.db.update(users).set({ passwordHash: upgraded, updatedAt: ctx.now() }).where(eq(users.id, user.id));
    ctx.logger.info("password hash upgraded to the current work factor", { userId: user.id });
  }
  return ctx.db.transaction(async (tx) => {
    const session = await startSession(ctx, tx, user.id, { userAgent: input.userAgent });
    await recordAudit(
      ctx,
      {
        teamId: defaultTeamId,
        actor: { type: "user", id: user.id },
        action: "auth.login",
        objectType: "session",
        objectId: session.id,
      },
      tx,
    );
    return { userId: user.id, session };
  });
}

/** Ends the caller's session and audits it in the same transaction. */
export async function logOut(ctx: ServiceContext, who: { sessionId: string; userId: string; teamId: string | null }) {
  await ctx.db.transaction(async (tx) => {
    if (!(await revokeSession(ctx, tx, who.sessionId))) return;
    await recordAudit(
      ctx,
      {
        teamId: who.teamId,
        actor: { type: "user", id: who.userId },
        action: "auth.logout",
        objectType: "session",
        objectId: who.sessionId,
      },
      tx,
    );
  });
}
