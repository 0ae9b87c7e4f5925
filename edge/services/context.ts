import type { AgentConnector } from "../clients/agent.js";
import type { Database } from "../db/client.js";
import type { EdgeConfig } from "../env.js";
import type { Logger } from "../logger.js";
import type { ApiKeyCache } from "./auth/key-cache.js";
import type { SecretBox } from "./crypto.js";

/**
 * What every service needs, built per request by the `init` middleware (or per sweep by the
 * reconciler). Services take it as their first argument and never reach for globals.
 */
export interface ServiceContext {
  db: Database;
  agents: AgentConnector;
  secrets: SecretBox;
  logger: Logger;
  requestId: string;
  config: EdgeConfig;
  /** The clock; tests may pin it. */
  now(): Date;
  /** Verified API keys of this instance; absent means every request looks the key up. */
  keyCache?: ApiKeyCache;
}

/** Who is calling: the team its API key belongs to, whether the key is an admin key, and what it may do. */
export interface Principal {
  teamId: string;
  keyId: string;
  isAdmin: boolean;
  /** The key's scopes (edge/services/auth/scopes.ts); an admin key holds every scope whatever this lists. */
  scopes: readonly string[];
  /** When the key stops working; absent or null: never. */
  expiresAt?: Date | null;
  /** The key's own request rate (set by an admin); absent or null: the edge's default. */
  rateLimit?: { perSec: number; burst: number } | null;
}

/** A ServiceContext on behalf of an authenticated caller; every team-owned query filters by `principal.teamId`. */
export interface TeamContext extends ServiceContext {
  principal: Principal;
}
