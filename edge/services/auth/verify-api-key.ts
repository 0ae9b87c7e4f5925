import { and, eq, isNull, lt, or, sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { preparedQuery } from "../../db/prepared.js";
import { apiKeys } from "../../db/schema/index.js";
import type { Principal, ServiceContext } from "../context.js";
import { sha256Hex } from "../crypto.js";
import { ServiceError } from "../errors.js";

/** `last_used_at` is refreshed at most this often, so authentication costs one read on most requests. */
const lastUsedResolutionMs = 60_000;

/** Throws API_KEY_EXPIRED when the key's expiry has passed. */
export function assertNotExpired(principal: Principal, now: Date): void {
  if (principal.expiresAt && principal.expiresAt.getTime() <= now.getTime()) {
    throw new ServiceError("API_KEY_EXPIRED", `the API key expired at ${principal.expiresAt.toISOString()}`);
  }
}

/**
 * Resolves an API key secret to its team and powers (from the instance's key cache when it has it).
 * Unknown and revoked keys answer the same UNAUTHORIZED, so a caller cannot tell which keys once
 * existed; an expired key answers API_KEY_EXPIRED (checked on every call, cached or not).
 */
export async function verifyApiKey(ctx: ServiceContext, secret: string): Promise<Principal> {
  const cached = ctx.keyCache?.get(secret, ctx.now().getTime());
  if (cached) {
    assertNotExpired(cached, ctx.now());
    return cached;
  }
  const generation = ctx.keyCache?.generation() ?? 0;
  const hash = await sha256Hex(secret);
  const [key] = await preparedQuery(ctx.db, "wrenn_api_key_by_hash_v2", selectKeyByHash).execute({ hash });
  if (!key || key.revokedAt) throw new ServiceError("UNAUTHORIZED", "the API key is not valid");
  const now = ctx.now();
  const principal: Principal = {
    teamId: key.teamId,
    keyId: key.id,
    isAdmin: key.isAdmin,
    scopes: key.scopes,
    expiresAt: key.expiresAt,
    rateLimit:
      key.rateLimitPerSec !== null && key.rateLimitBurst !== null
        ? { perSec: key.rateLimitPerSec, burst: key.rateLimitBurst }
        : null,
  };
  assertNotExpired(principal, now);
  if (!key.lastUsedAt || now.getTime() - key.lastUsedAt.getTime() > lastUsedResolutionMs) {
    const stale = new Date(now.getTime() - lastUsedResolutionMs);
    await ctx.db
      .update(apiKeys)
      .set({ lastUsedAt: now })
      .where(and(eq(apiKeys.id, key.id), or(isNull(apiKeys.lastUsedAt), lt(apiKeys.lastUsedAt, stale))));
  }
  ctx.keyCache?.set(secret, principal, now.getTime(), generation);
  return principal;
}

const selectKeyByHash = (db: Database) =>
  db
    .select({
      id: apiKeys.id,
      teamId: apiKeys.teamId,
      isAdmin: apiKeys.isAdmin,
      scopes: apiKeys.scopes,
      expiresAt: apiKeys.expiresAt,
      rateLimitPerSec: apiKeys.rateLimitPerSec,
      rateLimitBurst: apiKeys.rateLimitBurst,
      revokedAt: apiKeys.revokedAt,
      lastUsedAt: apiKeys.lastUsedAt,
    })
    .from(apiKeys)
    .where(eq(apiKeys.hash, sql.placeholder("hash")))
    .limit(1)
    .prepare("wrenn_api_key_by_hash_v2");
