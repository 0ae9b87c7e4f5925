import { and, eq, isNull, lt, or, sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { preparedQuery } from "../../db/prepared.js";
import { apiKeys } from "../../db/schema/index.js";
import type { Principal, ServiceContext } from "../context.js";
import { sha256Hex } from "../crypto.js";
import { ServiceError } from "../errors.js";

/** `last_used_at` is refreshed at most this often, so authentication costs one read on most requests. */
const lastUsedResolutionMs = 60_000;

/**
 * Resolves an API key secret to its team (from the instance's key cache when it has it). Unknown and revoked keys answer the same UNAUTHORIZED, so
 * a caller cannot tell which keys once existed.
 */
export async function verifyApiKey(ctx: ServiceContext, secret: string): Promise<Principal> {
  const cached = ctx.keyCache?.get(secret, ctx.now().getTime());
  if (cached) return cached;
  const generation = ctx.keyCache?.generation() ?? 0;
  const hash = await sha256Hex(secret);
  const [key] = await preparedQuery(ctx.db, "wrenn_api_key_by_hash", selectKeyByHash).execute({ hash });
  if (!key || key.revokedAt) throw new ServiceError("UNAUTHORIZED", "the API key is not valid");
  const now = ctx.now();
  if (!key.lastUsedAt || now.getTime() - key.lastUsedAt.getTime() > lastUsedResolutionMs) {
    const stale = new Date(now.getTime() - lastUsedResolutionMs);
    await ctx.db
      .update(apiKeys)
      .set({ lastUsedAt: now })
      .where(and(eq(apiKeys.id, key.id), or(isNull(apiKeys.lastUsedAt), lt(apiKeys.lastUsedAt, stale))));
  }
  const principal = { teamId: key.teamId, keyId: key.id, isAdmin: key.isAdmin };
  ctx.keyCache?.set(secret, principal, now.getTime(), generation);
  return principal;
}

const selectKeyByHash = (db: Database) =>
  db
    .select({
      id: apiKeys.id,
      teamId: apiKeys.teamId,
      isAdmin: apiKeys.isAdmin,
      revokedAt: apiKeys.revokedAt,
      lastUsedAt: apiKeys.lastUsedAt,
    })
    .from(apiKeys)
    .where(eq(apiKeys.hash, sql.placeholder("hash")))
    .limit(1)
    .prepare("wrenn_api_key_by_hash");
