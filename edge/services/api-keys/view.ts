import type { ApiKeyRow } from "../../db/schema/index.js";

/** An API key as the API lists it: never the secret. */
export interface ApiKeyView {
  id: string;
  teamId: string;
  name: string;
  prefix: string;
  isAdmin: boolean;
  createdAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
}

/** Shapes an API key row for the API. */
export function toApiKeyView(row: ApiKeyRow): ApiKeyView {
  return {
    id: row.id,
    teamId: row.teamId,
    name: row.name,
    prefix: row.prefix,
    isAdmin: row.isAdmin,
    createdAt: row.createdAt.toISOString(),
    lastUsedAt: row.lastUsedAt?.toISOString() ?? null,
    revokedAt: row.revokedAt?.toISOString() ?? null,
  };
}
