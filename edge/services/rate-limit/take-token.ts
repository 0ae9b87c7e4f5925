import { sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";

/** A token bucket's shape: `perSec` tokens flow in continuously, up to `burst`; each request takes one. */
export interface RateLimit {
  perSec: number;
  burst: number;
}

/** The key as the database holds it now, read in the same statement that takes the token. */
export interface CurrentKeyState {
  teamId: string;
  isAdmin: boolean;
  scopes: string[];
  expiresAt: Date | null;
  rateLimit: RateLimit | null;
}

/** What `takeToken` found. */
export type TakeTokenResult =
  /** The key is revoked or gone. */
  | { kind: "key-gone" }
  /** The key is not limited (an admin key without its own rate, or no default rate). */
  | { kind: "unlimited"; key: CurrentKeyState }
  | { kind: "allowed"; key: CurrentKeyState; limit: RateLimit; remaining: number }
  | { kind: "limited"; key: CurrentKeyState; limit: RateLimit; retryAfterMs: number };

interface Row {
  team_id: string;
  is_admin: boolean;
  scopes: string[] | string;
  expires_at: Date | string | null;
  own_per_sec: number | string | null;
  own_burst: number | string | null;
  per_sec: number | string | null;
  burst: number | string | null;
  tokens: number | string | null;
  last_allowed: boolean | null;
}

/**
 * Takes one token from the key's bucket in ONE statement, so it is atomic across every edge sharing
 * the database (concurrent requests serialise on the bucket row for the length of the statement):
 * the bucket is refilled by `perSec × seconds since refilledAt` (the database's clock, so edges'
 * clocks do not matter), capped at `burst`, and a token is taken when at least one is there. The
 * same statement reads the key row, so a revoke, an expiry or a scope change made through any edge
 * is seen by every edge on the key's next request, whatever that edge's key cache holds.
 *
 * `defaultLimit` applies to non-admin keys without their own rate; admin keys are limited only by
 * their own rate (operators' automation must not trip over tenants' defaults).
 */
export async function takeToken(
  db: Database,
  keyId: string,
  defaultLimit: RateLimit | undefined,
): Promise<TakeTokenResult> {
  const defaultPerSec = defaultLimit?.perSec ?? null;
  const defaultBurst = defaultLimit?.burst ?? null;
  // Tokens in the bucket now, before this request takes one.
  const refilled = sql`least(k.burst, b.tokens + k.per_sec * greatest(0, extract(epoch from now() - b.refilled_at)))`;
  const result = await db.execute(sql`
    with k as (
      select id, team_id, is_admin, scopes, expires_at,
        rate_limit_per_sec as own_per_sec, rate_limit_burst as own_burst,
        coalesce(rate_limit_per_sec, case when is_admin then null else ${defaultPerSec}::float8 end) as per_sec,
        coalesce(rate_limit_burst, case when is_admin then null else ${defaultBurst}::int end, 1) as burst
      from api_keys
      where id = ${keyId} and revoked_at is null
    ),
    taken as (
      insert into rate_limit_buckets as b (key_id, tokens, refilled_at, last_allowed)
      select id, burst - 1, now(), true from k where per_sec is not null
      on conflict (key_id) do update set
        tokens = (select ${refilled} - case when ${refilled} >= 1 then 1 else 0 end from k),
        refilled_at = now(),
        last_allowed = (select ${refilled} >= 1 from k)
      returning b.tokens, b.last_allowed
    )
    select k.team_id, k.is_admin, k.scopes, k.expires_at, k.own_per_sec, k.own_burst, k.per_sec, k.burst,
      taken.tokens, taken.last_allowed
    from k left join taken on true`);
  const row = rowsOf<Row>(result)[0];
  if (!row) return { kind: "key-gone" };
  const key: CurrentKeyState = {
    teamId: row.team_id,
    isAdmin: row.is_admin,
    scopes: textArray(row.scopes),
    expiresAt: row.expires_at === null ? null : new Date(row.expires_at),
    rateLimit:
      row.own_per_sec === null || row.own_burst === null
        ? null
        : { perSec: Number(row.own_per_sec), burst: Number(row.own_burst) },
  };
  if (row.per_sec === null || row.tokens === null || row.last_allowed === null) return { kind: "unlimited", key };
  const limit = { perSec: Number(row.per_sec), burst: Number(row.burst) };
  const tokens = Number(row.tokens);
  if (row.last_allowed) return { kind: "allowed", key, limit, remaining: Math.floor(tokens) };
  return { kind: "limited", key, limit, retryAfterMs: Math.ceil(((1 - tokens) / limit.perSec) * 1000) };
}

function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  if (typeof result === "object" && result !== null && "rows" in result && Array.isArray(result.rows)) {
    return result.rows as T[];
  }
  return [];
}

/** A `text[]` as the driver returns it: an array (node-postgres, PGlite) or, untyped, `{a,b}`. */
function textArray(value: string[] | string): string[] {
  if (Array.isArray(value)) return value;
  const inner = value.replace(/^\{|\}$/g, "");
  return inner === "" ? [] : inner.split(",").map((s) => s.replace(/^"|"$/g, ""));
}
