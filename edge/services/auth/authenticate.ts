import type { TeamRole } from "../../db/schema/index.js";
import { constantTimeEqualText } from "../accounts/password.js";
import { roleScopes } from "../accounts/roles.js";
import { type ActiveSession, findSession, teamsOf } from "../accounts/sessions.js";
import type { Principal, ServiceContext } from "../context.js";
import { NotFoundError, ServiceError } from "../errors.js";
import { RateLimitedError } from "../rate-limit/errors.js";
import { type CurrentKeyState, takeToken } from "../rate-limit/take-token.js";
import { assertNotExpired, verifyApiKey } from "./verify-api-key.js";

/**
 * Authenticates a request's API key and takes a token from its rate-limit bucket. The bucket
 * statement also reads the key row, so what it returns replaces the cached view of the key: a key
 * revoked, narrowed or expired through another edge stops working on its next request here too.
 * Keys that are not limited (admin keys without their own rate, or no default rate) skip the
 * database and rely on the key cache's TTL for changes made on other edges.
 */
export async function authenticate(ctx: ServiceContext, secret: string): Promise<Principal> {
  const principal = await verifyApiKey(ctx, secret);
  const defaultLimit = ctx.config.rateLimit;
  if (!principal.rateLimit && (principal.isAdmin || !defaultLimit)) return principal;
  const taken = await takeToken(ctx.db, principal.keyId, defaultLimit);
  if (taken.kind === "key-gone") {
    ctx.keyCache?.forgetKey(principal.keyId);
    throw new ServiceError("UNAUTHORIZED", "the API key is not valid");
  }
  let current = principal;
  if (changed(principal, taken.key)) {
    current = { ...principal, ...taken.key };
    // Drop the stale entry everywhere on this instance; the next lookup caches the new state.
    ctx.keyCache?.forgetKey(principal.keyId);
  }
  assertNotExpired(current, ctx.now());
  if (taken.kind === "limited") throw new RateLimitedError(taken.retryAfterMs, taken.limit);
  return current;
}

function changed(cached: Principal, now: CurrentKeyState): boolean {
  return (
    cached.teamId !== now.teamId ||
    cached.isAdmin !== now.isAdmin ||
    cached.scopes.join(",") !== now.scopes.join(",") ||
    (cached.expiresAt?.getTime() ?? null) !== (now.expiresAt?.getTime() ?? null) ||
    cached.rateLimit?.perSec !== now.rateLimit?.perSec ||
    cached.rateLimit?.burst !== now.rateLimit?.burst
  );
}

/** A signed-in request: its session, the user's teams, and the principal it acts as (null: the user is in no team). */
export interface SessionAuthentication {
  session: ActiveSession;
  teams: Array<{ teamId: string; name: string; role: TeamRole }>;
  principal: Principal | null;
}

/**
 * Authenticates a session cookie's token. `csrfToken` is what the request's X-CSRF-Token header
 * said, or null for a request that changes nothing; when given it must equal the session's CSRF
 * token, else FORBIDDEN before anything runs. The request acts in `team` (X-Wrenn-Team) when the
 * user belongs to it — another team does not exist for them (NOT_FOUND) — or else in the user's
 * first team, with the scopes of the user's role there (edge/services/accounts/roles.ts). The
 * instance admin also holds the admin API's powers, as an admin key does.
 */
export async function authenticateSession(
  ctx: ServiceContext,
  token: string,
  request: { csrfToken: string | null; team?: string | undefined },
): Promise<SessionAuthentication> {
  const session = await findSession(ctx, token);
  if (!session) throw new ServiceError("UNAUTHORIZED", "the session has ended or is not valid; sign in again");
  if (request.csrfToken !== null && !constantTimeEqualText(request.csrfToken, session.csrfToken)) {
    throw new ServiceError(
      "FORBIDDEN",
      "a request made with the session cookie must repeat the wrenn_csrf cookie's value in the X-CSRF-Token header",
      { details: { csrf: "missing or wrong X-CSRF-Token header" } },
    );
  }
  const teams = await teamsOf(ctx.db, session.user.id);
  const wanted = request.team?.trim();
  const membership = wanted ? teams.find((t) => t.teamId === wanted) : teams[0];
  if (!membership) {
    if (wanted) throw new NotFoundError("team", wanted);
    return { session, teams, principal: null };
  }
  const principal: Principal = {
    teamId: membership.teamId,
    keyId: session.id,
    isAdmin: session.user.isInstanceAdmin,
    scopes: roleScopes[membership.role],
    user: { id: session.user.id, role: membership.role, sessionId: session.id },
  };
  return { session, teams, principal };
}
