import { asc, eq } from "drizzle-orm";
import { apiKeys } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { ServiceError } from "../errors.js";
import { type ApiKeyView, toApiKeyView } from "./view.js";

/** The caller's team's keys (revoked ones included, marked); admins may ask for every team's keys. */
export async function listApiKeys(ctx: TeamContext, options: { allTeams?: boolean } = {}): Promise<ApiKeyView[]> {
  if (options.allTeams && !ctx.principal.isAdmin)
    throw new ServiceError("FORBIDDEN", "only admin keys may list every team's keys");
  const query = ctx.db.select().from(apiKeys);
  const rows = await (options.allTeams ? query : query.where(eq(apiKeys.teamId, ctx.principal.teamId))).orderBy(
    asc(apiKeys.createdAt),
    asc(apiKeys.id),
  );
  return rows.map(toApiKeyView);
}
