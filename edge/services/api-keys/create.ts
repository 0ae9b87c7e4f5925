import { eq } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { apiKeys, teams } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { sha256Hex } from "../crypto.js";
import { NotFoundError, ServiceError } from "../errors.js";
import { newApiKeySecret, newId } from "../ids.js";
import { type ApiKeyView, toApiKeyView } from "./view.js";

/** Characters of the secret kept in clear, so keys can be told apart in listings. */
export const apiKeyPrefixLength = 12;

/** Input of `createApiKey`. Only admin keys may set `teamId`, `newTeamName` or `isAdmin`. */
export interface CreateApiKeyInput {
  name: string;
  /** An existing team to create the key in (admin only). */
  teamId?: string;
  /** Create a new team with this name and put the key in it (admin only). */
  newTeamName?: string;
  /** Make an admin key (admin only). */
  isAdmin?: boolean;
}

/** A created key: the only time its secret is shown. */
export interface CreatedApiKey extends ApiKeyView {
  secret: string;
}

/** Inserts a key with the given secret; used by `createApiKey` and by the first-run bootstrap. */
export async function insertApiKey(
  db: Database,
  values: { teamId: string; name: string; isAdmin: boolean; secret: string },
): Promise<CreatedApiKey> {
  const [row] = await db
    .insert(apiKeys)
    .values({
      id: newId("key"),
      teamId: values.teamId,
      name: values.name,
      isAdmin: values.isAdmin,
      prefix: values.secret.slice(0, apiKeyPrefixLength),
      hash: await sha256Hex(values.secret),
    })
    .returning();
  if (!row) throw new Error("insert into api_keys returned no row");
  return { ...toApiKeyView(row), secret: values.secret };
}

/** Creates an API key in the caller's team (or, for admins, another or a new team) and returns its secret once. */
export async function createApiKey(ctx: TeamContext, input: CreateApiKeyInput): Promise<CreatedApiKey> {
  const wantsAdminPowers = input.teamId !== undefined || input.newTeamName !== undefined || input.isAdmin === true;
  if (wantsAdminPowers && !ctx.principal.isAdmin) {
    throw new ServiceError("FORBIDDEN", "only admin keys may create keys for other teams or admin keys");
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
    const created = await insertApiKey(tx, {
      teamId,
      name: input.name,
      isAdmin: input.isAdmin ?? false,
      secret: newApiKeySecret(),
    });
    ctx.logger.info("api key created", { keyId: created.id, teamId, isAdmin: created.isAdmin });
    return created;
  });
}
