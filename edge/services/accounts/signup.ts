import { count, sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { memberships, teams, users } from "../../db/schema/index.js";
import { recordAudit } from "../audit/record.js";
import { defaultTeam } from "../auth/bootstrap.js";
import type { ServiceContext } from "../context.js";
import { ConflictError, ServiceError } from "../errors.js";
import { newId } from "../ids.js";
import { takeAddressToken } from "./login-limit.js";
import { checkPasswordPolicy, hashPassword } from "./password.js";
import { accountSettings, type NewSession, startSession, userByEmail } from "./sessions.js";
import { emailKey, newAccountId } from "./tokens.js";

/** Input of `signUp`. */
export interface SignUpInput {
  email: string;
  password: string;
  userAgent?: string | undefined;
}

/** A new account and its first session. */
export interface SignedUp {
  user: { id: string; email: string; isInstanceAdmin: boolean };
  teamId: string;
  session: NewSession;
}

/**
 * Creates a user inside `tx` (which must hold the users lock, see `lockUsers`), refusing an email
 * already taken whatever its case.
 */
export async function insertUser(
  tx: Database,
  values: { email: string; passwordHash: string; isInstanceAdmin: boolean; now: Date },
): Promise<{ id: string; email: string; isInstanceAdmin: boolean }> {
  if (await userByEmail(tx, values.email))
    throw new ConflictError("an account with this email exists; sign in instead");
  const id = newAccountId("usr");
  await tx.insert(users).values({
    id,
    email: values.email.trim(),
    passwordHash: values.passwordHash,
    isInstanceAdmin: values.isInstanceAdmin,
    createdAt: values.now,
    updatedAt: values.now,
  });
  return { id, email: values.email.trim(), isInstanceAdmin: values.isInstanceAdmin };
}

/**
 * Serialises sign-ups for the length of `tx`, so exactly one first user becomes instance admin and
 * two sign-ups of one email cannot both pass the uniqueness look (the unique index backs it anyway).
 * The users table is small and sign-ups rare, so a table lock costs nothing that matters.
 */
export async function lockUsers(tx: Database): Promise<void> {
  await tx.execute(sql`lock table ${users} in share row exclusive mode`);
}

/**
 * Signs a person up with an email and a password. The first user of an install becomes the instance
 * admin and owner of the team that holds the admin key; later users get a team of their own to own,
 * unless WRENN_SIGNUP=invite (the default), when they must come through an invitation instead
 * (`acceptInvitation`). Starts a session.
 */
export async function signUp(ctx: ServiceContext, input: SignUpInput): Promise<SignedUp> {
  checkPasswordPolicy(input.password);
  const settings = accountSettings(ctx);
  // A hash costs ~120 ms of CPU, so a refusal that needs none comes first, and sign-ups share the
  // client address's sign-in bucket.
  await takeAddressToken(ctx);
  if (settings.signup === "invite" && (await ctx.db.select({ id: users.id }).from(users).limit(1)).length > 0) {
    throw new ServiceError("FORBIDDEN", "sign-ups on this instance need an invitation link");
  }
  // Hashing runs before the lock is taken.
  const passwordHash = await hashPassword(input.password, settings.passwordIterations);
  return ctx.db.transaction(async (tx) => {
    await lockUsers(tx);
    const [existing] = await tx.select({ n: count() }).from(users);
    const first = (existing?.n ?? 0) === 0;
    if (!first && settings.signup === "invite") {
      throw new ServiceError("FORBIDDEN", "sign-ups on this instance need an invitation link");
    }
    const now = ctx.now();
    const user = await insertUser(tx, { email: input.email, passwordHash, isInstanceAdmin: first, now });
    let teamId: string;
    if (first) {
      await tx.insert(teams).values(defaultTeam).onConflictDoNothing();
      teamId = defaultTeam.id;
    } else {
      teamId = newId("team");
      await tx.insert(teams).values({ id: teamId, name: `${emailKey(input.email).split("@")[0]}'s team` });
    }
    await tx.insert(memberships).values({ userId: user.id, teamId, role: "owner", createdAt: now, updatedAt: now });
    await recordAudit(
      ctx,
      {
        teamId,
        actor: { type: "user", id: user.id },
        action: "user.signup",
        objectType: "user",
        objectId: user.id,
        details: { email: user.email, instanceAdmin: first },
      },
      tx,
    );
    const session = await startSession(ctx, tx, user.id, { userAgent: input.userAgent });
    ctx.logger.info("user signed up", { userId: user.id, teamId, instanceAdmin: first });
    return { user, teamId, session };
  });
}
