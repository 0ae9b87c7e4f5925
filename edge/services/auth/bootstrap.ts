import { count, eq } from "drizzle-orm";
import { apiKeys, teams } from "../../db/schema/index.js";
import { insertApiKey } from "../api-keys/create.js";
import type { ServiceContext } from "../context.js";
import { sha256Hex } from "../crypto.js";
import { newApiKeySecret } from "../ids.js";

/** The team that owns the first admin key. */
export const defaultTeam = { id: "team_default", name: "default" } as const;

/** What `ensureAdminKey` did. `secret` is set only when a key was generated and must be shown once. */
export interface BootstrapResult {
  created: boolean;
  keyId?: string;
  secret?: string;
}

/**
 * First-run bootstrap. With `configuredKey` (WRENN_ADMIN_API_KEY) that key is installed as an admin key
 * if it is not stored yet. Without it, an empty database gets a freshly generated admin key, returned
 * once so the caller can print it; a database that has keys is left alone.
 */
export async function ensureAdminKey(ctx: ServiceContext, configuredKey?: string): Promise<BootstrapResult> {
  return ctx.db.transaction(async (tx) => {
    await tx.insert(teams).values(defaultTeam).onConflictDoNothing();
    if (configuredKey !== undefined) {
      const [existing] = await tx
        .select({ id: apiKeys.id })
        .from(apiKeys)
        .where(eq(apiKeys.hash, await sha256Hex(configuredKey)));
      if (existing) return { created: false, keyId: existing.id };
      const key = await insertApiKey(tx, {
        teamId: defaultTeam.id,
        name: "admin (WRENN_ADMIN_API_KEY)",
        isAdmin: true,
        secret: configuredKey,
      });
      return { created: true, keyId: key.id };
    }
    const [row] = await tx.select({ n: count() }).from(apiKeys);
    if ((row?.n ?? 0) > 0) return { created: false };
    const key = await insertApiKey(tx, {
      teamId: defaultTeam.id,
      name: "admin (first run)",
      isAdmin: true,
      secret: newApiKeySecret(),
    });
    return { created: true, keyId: key.id, secret: key.secret };
  });
}
