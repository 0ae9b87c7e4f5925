import { and, eq, inArray, isNull, sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import {
  activeSandboxStates,
  apiKeys,
  sandboxes,
  type TeamQuotaOverrides,
  type TeamRow,
  teams,
} from "../../db/schema/index.js";
import { BadRequestError, NotFoundError, ServiceError } from "../errors.js";

/** Every per-team limit, as enforced. */
export interface TeamQuotas {
  /** Sandboxes holding a running guest (every active state but `paused`). */
  maxRunningSandboxes: number;
  /** vCPUs summed over those sandboxes. */
  maxVcpus: number;
  /** Memory in MiB summed over those sandboxes. */
  maxMemoryMb: number;
  /** Sandboxes in state `paused` (or `pausing`). */
  maxPausedSandboxes: number;
  /** Disk held by pause snapshots (as the agents reported at pause), in MiB. */
  maxPausedDiskMb: number;
  /** Longest timeout a sandbox may be given, in seconds. */
  maxTimeoutSec: number;
  /** Whether `timeoutSec: 0` (never time out) is allowed. */
  allowNoTimeout: boolean;
  /** API keys that are not revoked. */
  maxApiKeys: number;
}

/** The name of one limit. */
export type QuotaName = keyof TeamQuotas;

/**
 * Limits of a team that has no override: enough for one builder's agents (20 sandboxes of the
 * default 1 vCPU / 512 MiB, or 10 of 4 vCPU / 4 GiB), bounded so that one key cannot fill a public
 * fleet, and no sandbox that lives forever.
 */
export const defaultTeamQuotas: Readonly<TeamQuotas> = Object.freeze({
  maxRunningSandboxes: 20,
  maxVcpus: 40,
  maxMemoryMb: 40 * 1024,
  maxPausedSandboxes: 100,
  maxPausedDiskMb: 100 * 1024,
  maxTimeoutSec: 86_400,
  allowNoTimeout: false,
  maxApiKeys: 25,
});

/** A team's limits: its overrides over the defaults. */
export function effectiveQuotas(overrides: TeamQuotaOverrides | null | undefined): TeamQuotas {
  const quotas: TeamQuotas = { ...defaultTeamQuotas };
  for (const [name, value] of Object.entries(overrides ?? {})) {
    if (name in quotas && value !== undefined && value !== null) Object.assign(quotas, { [name]: value });
  }
  return quotas;
}

/** What a team holds now, in the units of `TeamQuotas`. */
export interface TeamUsage {
  runningSandboxes: number;
  vcpus: number;
  memoryMb: number;
  pausedSandboxes: number;
  pausedDiskMb: number;
  apiKeys: number;
}

/** What a team's sandboxes hold, in the units of `TeamQuotas` (`apiKeys` left at 0). */
export async function sandboxUsage(db: Database, teamId: string): Promise<TeamUsage> {
  const notPaused = sql`${sandboxes.state} <> 'paused'`;
  const [held] = await db
    .select({
      running: sql<number>`count(*) filter (where ${notPaused})::int`,
      vcpus: sql<number>`coalesce(sum(${sandboxes.vcpus}) filter (where ${notPaused}), 0)::int`,
      memoryMb: sql<number>`coalesce(sum(${sandboxes.memoryMb}) filter (where ${notPaused}), 0)::int`,
      // A pause under way counts as paused already, so two concurrent pauses cannot both take the last place.
      paused: sql<number>`count(*) filter (where ${sandboxes.state} in ('paused', 'pausing'))::int`,
      pausedBytes: sql<string>`coalesce(sum(${sandboxes.snapshotBytes}) filter (where ${sandboxes.state} = 'paused'), 0)::text`,
    })
    .from(sandboxes)
    .where(and(eq(sandboxes.teamId, teamId), inArray(sandboxes.state, [...activeSandboxStates])));
  return {
    runningSandboxes: held?.running ?? 0,
    vcpus: held?.vcpus ?? 0,
    memoryMb: held?.memoryMb ?? 0,
    pausedSandboxes: held?.paused ?? 0,
    pausedDiskMb: Math.ceil(Number(held?.pausedBytes ?? 0) / 1024 ** 2),
    apiKeys: 0,
  };
}

/** How many keys of a team are not revoked. */
export async function liveApiKeyCount(db: Database, teamId: string): Promise<number> {
  const [keys] = await db
    .select({ n: sql<number>`count(*)::int` })
    .from(apiKeys)
    .where(and(eq(apiKeys.teamId, teamId), isNull(apiKeys.revokedAt)));
  return keys?.n ?? 0;
}

/** Everything a team holds; inside a transaction that locked the team row, nobody else can change it meanwhile. */
export async function teamUsage(db: Database, teamId: string): Promise<TeamUsage> {
  return { ...(await sandboxUsage(db, teamId)), apiKeys: await liveApiKeyCount(db, teamId) };
}

/**
 * Reads a team row with `FOR UPDATE`, inside the caller's transaction: every admission that checks
 * a quota takes this lock first, so concurrent creates of one team run their count-then-insert one
 * after another (across edges too: the lock lives in the database), and 50 creates against a quota
 * of 10 admit exactly 10.
 */
export async function lockTeam(tx: Database, teamId: string): Promise<TeamRow> {
  const [team] = await tx.select().from(teams).where(eq(teams.id, teamId)).for("update");
  if (!team) throw new NotFoundError("team", teamId);
  return team;
}

/** A team limit that this request would exceed: 429 QUOTA_EXCEEDED, naming the limit, its value and the usage. */
export class QuotaExceededError extends ServiceError {
  constructor(quota: QuotaName, limit: number, used: number, what: string) {
    super(
      "QUOTA_EXCEEDED",
      `team quota ${quota} is ${limit}; ${what} (in use: ${used}). Free some up, or ask an admin to raise it`,
      { details: { quota, limit, used } },
    );
  }
}

/** Refuses a sandbox that would take the team over its running count, vCPU or memory limits. */
export function admitRunning(quotas: TeamQuotas, usage: TeamUsage, sandbox: { vcpus: number; memoryMb: number }): void {
  if (usage.runningSandboxes + 1 > quotas.maxRunningSandboxes) {
    throw new QuotaExceededError(
      "maxRunningSandboxes",
      quotas.maxRunningSandboxes,
      usage.runningSandboxes,
      "no more sandboxes may run at once",
    );
  }
  if (usage.vcpus + sandbox.vcpus > quotas.maxVcpus) {
    throw new QuotaExceededError(
      "maxVcpus",
      quotas.maxVcpus,
      usage.vcpus,
      `${sandbox.vcpus} more vCPU would exceed it`,
    );
  }
  if (usage.memoryMb + sandbox.memoryMb > quotas.maxMemoryMb) {
    throw new QuotaExceededError(
      "maxMemoryMb",
      quotas.maxMemoryMb,
      usage.memoryMb,
      `${sandbox.memoryMb} MiB more memory would exceed it`,
    );
  }
}

/**
 * Refuses a pause that would take the team over its paused count, or when its snapshots already
 * fill its paused disk (a snapshot's size is known only once it is written).
 */
export function admitPaused(quotas: TeamQuotas, usage: TeamUsage): void {
  if (usage.pausedSandboxes + 1 > quotas.maxPausedSandboxes) {
    throw new QuotaExceededError(
      "maxPausedSandboxes",
      quotas.maxPausedSandboxes,
      usage.pausedSandboxes,
      "no more sandboxes may be paused",
    );
  }
  if (usage.pausedDiskMb >= quotas.maxPausedDiskMb) {
    throw new QuotaExceededError(
      "maxPausedDiskMb",
      quotas.maxPausedDiskMb,
      usage.pausedDiskMb,
      "paused sandboxes' snapshots fill it",
    );
  }
}

/**
 * Checks a requested timeout against the team's limits: 0 (never) only when `allowNoTimeout`, and
 * at most `maxTimeoutSec`. A value no retry can fix is a 400 BAD_REQUEST naming the limit.
 */
export function checkTimeoutQuota(quotas: TeamQuotas, timeoutSec: number): void {
  if (timeoutSec === 0 && !quotas.allowNoTimeout) {
    throw new BadRequestError(
      `this team may not create sandboxes without a timeout (timeoutSec 0); give at most ${quotas.maxTimeoutSec} s (quota maxTimeoutSec), or ask an admin for allowNoTimeout`,
      { timeoutSec: "0 (never) is not allowed for this team", quota: "allowNoTimeout" },
    );
  }
  if (timeoutSec > quotas.maxTimeoutSec) {
    throw new BadRequestError(
      `timeoutSec ${timeoutSec} is longer than this team's limit of ${quotas.maxTimeoutSec} s (quota maxTimeoutSec)`,
      { timeoutSec: `at most ${quotas.maxTimeoutSec}`, quota: "maxTimeoutSec" },
    );
  }
}

/** A team's row (not locked) and its effective limits. */
export async function loadTeamPolicy(db: Database, teamId: string): Promise<{ team: TeamRow; quotas: TeamQuotas }> {
  const [team] = await db.select().from(teams).where(eq(teams.id, teamId)).limit(1);
  if (!team) throw new NotFoundError("team", teamId);
  return { team, quotas: effectiveQuotas(team.quotas) };
}

/**
 * Checks that a team may hold one more API key (quota `maxApiKeys`), inside the caller's transaction
 * and under the team row lock, so concurrent key creations cannot overshoot. Called by
 * `createApiKey` just before it inserts.
 */
export async function admitNewApiKey(tx: Database, teamId: string): Promise<void> {
  const team = await lockTeam(tx, teamId);
  const quotas = effectiveQuotas(team.quotas);
  const keys = await liveApiKeyCount(tx, teamId);
  if (keys + 1 > quotas.maxApiKeys) {
    throw new QuotaExceededError("maxApiKeys", quotas.maxApiKeys, keys, "no more keys may be created");
  }
}
