import type { ApiKeyRow } from "../../db/schema/index.js";

/** An API key as the API lists it: never the secret. */
export interface ApiKeyView {
  id: string;
  teamId: string;
  name: string;
  prefix: string;
  isAdmin: boolean;
  /** What the key may do; an admin key lists `admin` (which holds every scope). */
  scopes: string[];
  /** When the key stops working; null: never. */
  expiresAt: string | null;
  /** The key's own request rate (set by an admin); null: the edge's default. */
  rateLimit: { perSec: number; burst: number } | null;
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
    scopes: row.isAdmin ? ["admin", ...row.scopes] : [...row.scopes],
    expiresAt: row.expiresAt?.toISOString() ?? null,
    rateLimit:
      row.rateLimitPerSec !== null && row.rateLimitBurst !== null
        ? { perSec: row.rateLimitPerSec, burst: row.rateLimitBurst }
        : null,
    createdAt: row.createdAt.toISOString(),
    lastUsedAt: row.lastUsedAt?.toISOString() ?? null,
    revokedAt: row.revokedAt?.toISOString() ?? null,
  };
}
