import type { Principal, ServiceContext } from "../context.js";
import { ServiceError } from "../errors.js";
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
