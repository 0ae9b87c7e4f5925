import { and, eq, isNull } from "drizzle-orm";
import { apiKeys } from "../../db/schema/index.js";
import { recordAudit } from "../audit/record.js";
import type { TeamContext } from "../context.js";
import { NotFoundError, ServiceError } from "../errors.js";
import { type ApiKeyView, toApiKeyView } from "./view.js";

/**
 * Revokes a key. Admin keys may revoke any key; other keys only their own team's non-admin keys
 * (another team's key is "not found", an admin key of their own team is FORBIDDEN). Revoking twice
 * is harmless and keeps the first revocation time.
 */
export async function revokeApiKey(ctx: TeamContext, keyId: string): Promise<ApiKeyView> {
  const reachable = ctx.principal.isAdmin
    ? eq(apiKeys.id, keyId)
    : and(eq(apiKeys.id, keyId), eq(apiKeys.teamId, ctx.principal.teamId));
  const revocable = ctx.principal.isAdmin ? reachable : and(reachable, eq(apiKeys.isAdmin, false));
  const [revoked] = await ctx.db.transaction(async (tx) => {
    const rows = await tx
      .update(apiKeys)
      .set({ revokedAt: ctx.now(), updatedAt: ctx.now() })
      .where(and(revocable, isNull(apiKeys.revokedAt)))
      .returning();
    for (const r of rows)
      await recordAudit(ctx, { teamId: r.teamId, action: "api_key.revoke", objectType: "api_key", objectId: r.id }, tx);
    return rows;
  });
  if (revoked) {
    ctx.keyCache?.forgetKey(keyId);
    ctx.logger.info("api key revoked", { keyId });
    return toApiKeyView(revoked);
  }
  const [existing] = await ctx.db.select().from(apiKeys).where(reachable);
  if (!existing) throw new NotFoundError("api key", keyId);
  if (existing.isAdmin && !ctx.principal.isAdmin) {
    throw new ServiceError("FORBIDDEN", "only admin keys may revoke admin keys");
  }
  return toApiKeyView(existing);
}
