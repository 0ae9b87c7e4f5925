import { and, eq, isNull } from "drizzle-orm";
import { apiKeys } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { NotFoundError } from "../errors.js";
import { type ApiKeyView, toApiKeyView } from "./view.js";

/**
 * Revokes a key of the caller's team (admins: of any team). Revoking twice is harmless and keeps the
 * first revocation time.
 */
export async function revokeApiKey(ctx: TeamContext, keyId: string): Promise<ApiKeyView> {
  const scope = ctx.principal.isAdmin
    ? eq(apiKeys.id, keyId)
    : and(eq(apiKeys.id, keyId), eq(apiKeys.teamId, ctx.principal.teamId));
  const [revoked] = await ctx.db
    .update(apiKeys)
    .set({ revokedAt: ctx.now(), updatedAt: ctx.now() })
    .where(and(scope, isNull(apiKeys.revokedAt)))
    .returning();
  if (revoked) {
    ctx.keyCache?.forgetKey(keyId);
    ctx.logger.info("api key revoked", { keyId });
    return toApiKeyView(revoked);
  }
  const [existing] = await ctx.db.select().from(apiKeys).where(scope);
  if (!existing) throw new NotFoundError("api key", keyId);
  return toApiKeyView(existing);
}
