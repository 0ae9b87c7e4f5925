import { eq } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { apiKeys, teams } from "../../db/schema/index.js";
import { recordAudit } from "../audit/record.js";
import type { ApiKeyScope } from "../auth/scopes.js";
import type { TeamContext } from "../context.js";
import { sha256Hex } from "../crypto.js";
import { NotFoundError, ServiceError } from "../errors.js";
import { newApiKeySecret, newId } from "../ids.js";
import { admitNewApiKey } from "../teams/quotas.js";
import { grantableExpiry, grantableScopes, requireAdminCaller } from "./powers.js";
import { type ApiKeyView, toApiKeyView } from "./view.js";

/** Characters of the secret kept in clear, so keys can be told apart in listings. */
export const apiKeyPrefixLength = 12;

/**
 * Input of `createApiKey`. Only admin keys may set `teamId`, `newTeamName`, `isAdmin` (or the `admin`
 * scope) and `rateLimit`; other keys may only hand out scopes they hold and expiries no later than
 * their own.
 */
export interface CreateApiKeyInput {
  name: string;
  /** An existing team to create the key in (admin only). */
  teamId?: string;
  /** Create a new team with this name and put the key in it (admin only). */
  newTeamName?: string;
  /** Make an admin key (admin only). */
  isAdmin?: boolean;
  /** What the key may do; default: the caller's own scopes (`admin` makes an admin key). */
  scopes?: ApiKeyScope[];
  /** When the key stops working; default: never (or the caller's own expiry). */
  expiresAt?: Date | null;
  /** The key's own request rate (admin only); default: the edge's. */
  rateLimit?: { perSec: number; burst: number } | null;
}

/** A created key: the only time its secret is shown. */
export interface CreatedApiKey extends ApiKeyView {
  secret: string;
}

/** Inserts a key with the given secret; used by `createApiKey` and by the first-run bootstrap. */
export async function insertApiKey(
  db: Database,
  values: {
    teamId: string;
    name: string;
    isAdmin: boolean;
    secret: string;
    scopes?: string[];
    expiresAt?: Date | null;
    rateLimit?: { perSec: number; burst: number } | null;
  },
): Promise<CreatedApiKey> {
  const [row] = await db
    .insert(apiKeys)
    .values({
      id: newId("key"),
      teamId: values.teamId,
      name: values.name,
      isAdmin: values.isAdmin,
      ...(values.scopes ? { scopes: values.scopes } : {}),
      expiresAt: values.expiresAt ?? null,
      rateLimitPerSec: values.rateLimit?.perSec ?? null,
      rateLimitBurst: values.rateLimit?.burst ?? null,
      prefix: values.secret.slice(0, apiKeyPrefixLength),
      hash: await sha256Hex(values.secret),
    })
    .returning();
  if (!row) throw new Error("insert into api_keys returned no row");
  return { ...toApiKeyView(row), secret: values.secret };
}

/** Creates an API key in the caller's team (or, for admins, another or a new team) and returns its secret once. */
export async function createApiKey(ctx: TeamContext, input: CreateApiKeyInput): Promise<CreatedApiKey> {
  const isAdmin = input.isAdmin === true || input.scopes?.includes("admin") === true;
  const wantsAdminPowers =
    input.teamId !== undefined || input.newTeamName !== undefined || isAdmin || input.rateLimit != null;
  if (wantsAdminPowers) {
    requireAdminCaller(ctx.principal, "create keys for other teams, admin keys or keys with their own rate limit");
  }
  const scopes = grantableScopes(ctx.principal, input.scopes);
  const expiresAt = grantableExpiry(ctx.principal, input.expiresAt);
  if (expiresAt && expiresAt.getTime() <= ctx.now().getTime()) {
    throw new ServiceError("BAD_REQUEST", "expiresAt must be in the future", {
      details: { expiresAt: "must be in the future" },
    });
  }
  if (input.teamId !== undefined && input.newTeamName !== undefined) {
    throw new ServiceError("BAD_REQUEST", "give teamId or newTeamName, not both", {
      details: { teamId: "conflicts with newTeamName" },
    });
  }
  return ctx.db.transaction(async (tx) => {
    let teamId = input.teamId ?? ctx.principal.teamId;
    if (input.newTeamName !== undefined) {
      teamId = newId("team");
      await tx.insert(teams).values({ id: teamId, name: input.newTeamName });
    } else if (input.teamId !== undefined) {
      const [team] = await tx.select({ id: teams.id }).from(teams).where(eq(teams.id, input.teamId));
      if (!team) throw new NotFoundError("team", input.teamId);
    }
    // Team quota maxApiKeys (edge/services/teams/quotas.ts): locks the team row, counts its live keys.
    await admitNewApiKey(tx, teamId);
    const created = await insertApiKey(tx, {
      teamId,
      name: input.name,
      isAdmin,
      secret: newApiKeySecret(),
      scopes,
      expiresAt,
      rateLimit: input.rateLimit ?? null,
    });
    await recordAudit(
      ctx,
      {
        teamId,
        action: "api_key.create",
        objectType: "api_key",
        objectId: created.id,
        details: { name: created.name, isAdmin: created.isAdmin, scopes: created.scopes },
      },
      tx,
    );
    ctx.logger.info("api key created", {
      keyId: created.id,
      teamId,
      isAdmin: created.isAdmin,
      scopes: created.scopes,
      expiresAt: created.expiresAt,
    });
    return created;
  });
}
