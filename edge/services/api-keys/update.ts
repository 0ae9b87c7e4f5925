import { and, eq } from "drizzle-orm";
import { apiKeys } from "../../db/schema/index.js";
import type { ApiKeyScope } from "../auth/scopes.js";
import type { TeamContext } from "../context.js";
import { BadRequestError, NotFoundError, ServiceError } from "../errors.js";
import { grantableExpiry, grantableScopes, requireAdminCaller } from "./powers.js";
import { type ApiKeyView, toApiKeyView } from "./view.js";

/** Input of `updateApiKey`; absent fields are left alone. */
export interface UpdateApiKeyInput {
  name?: string;
  /** The key's new scopes (not `admin`: admin keys are made, not promoted). */
  scopes?: ApiKeyScope[];
  /** A new expiry; null: never. */
  expiresAt?: Date | null;
  /** The key's own request rate (admin only); null: back to the edge's default. */
  rateLimit?: { perSec: number; burst: number } | null;
}

/**
 * Changes a key's name, scopes, expiry or (admin only) rate. Non-admin callers reach only their own
 * team's non-admin keys and cannot grant more than they hold. The change takes effect on this
 * instance at once and on other edges at the key's next rate-limited request (its bucket statement
 * reads the key row), or within the key cache's TTL for keys that are not limited.
 */
export async function updateApiKey(ctx: TeamContext, keyId: string, input: UpdateApiKeyInput): Promise<ApiKeyView> {
  const caller = ctx.principal;
  if (input.rateLimit !== undefined) requireAdminCaller(caller, "set a key's rate limit");
  if (input.scopes?.includes("admin")) {
    throw new BadRequestError("the admin scope cannot be granted to an existing key; create an admin key instead", {
      scopes: "must not contain admin",
    });
  }
  const reachable = caller.isAdmin
    ? eq(apiKeys.id, keyId)
    : and(eq(apiKeys.id, keyId), eq(apiKeys.teamId, caller.teamId));
  const [existing] = await ctx.db.select().from(apiKeys).where(reachable);
  if (!existing) throw new NotFoundError("api key", keyId);
  if (existing.isAdmin && !caller.isAdmin) throw new ServiceError("FORBIDDEN", "only admin keys may change admin keys");
  if (existing.isAdmin && input.scopes !== undefined) {
    throw new BadRequestError("admin keys hold every scope; their scopes cannot be narrowed", {
      scopes: "not for admin keys",
    });
  }
  const changes: Partial<typeof apiKeys.$inferInsert> = { updatedAt: ctx.now() };
  if (input.name !== undefined) changes.name = input.name;
  if (input.scopes !== undefined) changes.scopes = grantableScopes(caller, input.scopes);
  if (input.expiresAt !== undefined) changes.expiresAt = grantableExpiry(caller, input.expiresAt);
  if (input.rateLimit !== undefined) {
    changes.rateLimitPerSec = input.rateLimit?.perSec ?? null;
    changes.rateLimitBurst = input.rateLimit?.burst ?? null;
  }
  const [updated] = await ctx.db.update(apiKeys).set(changes).where(reachable).returning();
  if (!updated) throw new NotFoundError("api key", keyId);
  ctx.keyCache?.forgetKey(keyId);
  ctx.logger.info("api key updated", { keyId, fields: Object.keys(changes).filter((k) => k !== "updatedAt") });
  return toApiKeyView(updated);
}
