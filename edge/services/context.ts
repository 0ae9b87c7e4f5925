import { type AgentConnector, createAgentConnector } from "../clients/agent.js";
import type { Database } from "../db/client.js";
import type { EdgeConfig } from "../env.js";
import type { Logger } from "../logger.js";
import type { ApiKeyCache } from "./auth/key-cache.js";
import { createSecretBox, type SecretBox } from "./crypto.js";

/**
 * What every service needs. Services take it as their first argument and never reach for globals.
 * Build it with `serviceContext()`, never by hand: the `init` middleware does per request, the Node
 * and Workers entries per bootstrap and sweep, `wrenn up` per command, tests per harness.
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
  /** The caller's address as the edge sees it (edge/middleware/auth.ts), for the audit log. */
  clientIp?: string;
}

/**
 * Who is calling: the team its API key belongs to (or, for a signed-in user, the team the request acts
 * in), whether the key is an admin key (or the user the instance admin), and what it may do.
 */
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
  /**
   * Set when a signed-in user calls with a session cookie (docs/accounts.md): the user, the role in
   * `teamId` that gave `scopes`, and the session (whose id then stands in `keyId`).
   */
  user?: { id: string; role: "owner" | "admin" | "member"; sessionId: string };
}

/** A ServiceContext on behalf of an authenticated caller; every team-owned query filters by `principal.teamId`. */
export interface TeamContext extends ServiceContext {
  principal: Principal;
}

/**
 * The process-wide half of every ServiceContext, made once per process (Node, `wrenn up`, a test
 * harness) or per isolate (Workers) by `createServiceDeps`. `AppDeps` extends it.
 */
export interface ServiceDeps {
  agents: AgentConnector;
  secrets: SecretBox;
  logger: Logger;
  config: EdgeConfig;
  /** The clock; tests may pin it. Default: the wall clock. */
  now?: () => Date;
}

/** The per-use half: what one request, sweep or command runs on. */
export interface ServiceScope {
  db: Database;
  /** Names the request, sweep or command in logs and in the agent's logs (e.g. "reconcile", "wrenn-up"). */
  requestId: string;
  /** Default: the deps' logger with the request id on every line. */
  logger?: Logger;
  keyCache?: ApiKeyCache;
}

const wallClock = () => new Date();

/** Options of `createServiceDeps`. */
export interface ServiceDepsOptions {
  /** The edge's encryption key (64 hex characters); seals host tokens and envd tokens at rest. */
  encryptionKey: string;
  config: EdgeConfig;
  logger: Logger;
  /** Default: `createAgentConnector()` over the global fetch (what Workers use). */
  agents?: AgentConnector;
  now?: () => Date;
}

/** Builds the process-wide deps: the one place that turns an encryption key into the secret box. */
export async function createServiceDeps(options: ServiceDepsOptions): Promise<ServiceDeps> {
  return {
    agents: options.agents ?? createAgentConnector(),
    secrets: await createSecretBox(options.encryptionKey),
    logger: options.logger,
    config: options.config,
    ...(options.now ? { now: options.now } : {}),
  };
}

/** The one way to make a ServiceContext. */
export function serviceContext(deps: ServiceDeps, scope: ServiceScope): ServiceContext {
  const ctx: ServiceContext = {
    db: scope.db,
    agents: deps.agents,
    secrets: deps.secrets,
    logger: scope.logger ?? deps.logger.child({ requestId: scope.requestId }),
    requestId: scope.requestId,
    config: deps.config,
    now: deps.now ?? wallClock,
  };
  if (scope.keyCache) ctx.keyCache = scope.keyCache;
  return ctx;
}

/** `ctx` on behalf of `principal`, with the team id on every log line. */
export function teamContext(ctx: ServiceContext, principal: Principal): TeamContext {
  return { ...ctx, principal, logger: ctx.logger.child({ teamId: principal.teamId }) };
}
