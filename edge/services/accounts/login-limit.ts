import { sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import type { ServiceContext } from "../context.js";
import type { RateLimit } from "../rate-limit/take-token.js";
import { LoginRateLimitedError } from "./errors.js";
import { accountSettings } from "./sessions.js";

/**
 * Takes one token from a sign-in bucket (`email:<lower-cased address>` or `ip:<address>`) in one
 * statement, the same token bucket as the API keys' (edge/services/rate-limit/take-token.ts), so it
 * is atomic across edges and uses the database's clock. Returns the milliseconds to wait when the
 * bucket is empty, else null.
 */
export async function takeLoginToken(db: Database, bucket: string, limit: RateLimit): Promise<number | null> {
  const refilled = sql`least(${limit.burst}::float8, b.tokens + ${limit.perSec}::float8 * greatest(0, extract(epoch from now() - b.refilled_at)))`;
  const result = await db.execute(sql`
    insert into login_rate_buckets as b (bucket, tokens, refilled_at, last_allowed)
    values (${bucket}, ${limit.burst - 1}::float8, now(), true)
    on conflict (bucket) do update set
      tokens = ${refilled} - case when ${refilled} >= 1 then 1 else 0 end,
      refilled_at = now(),
      last_allowed = ${refilled} >= 1
    returning b.tokens, b.last_allowed`);
  const rows = (Array.isArray(result) ? result : ((result as { rows?: unknown[] }).rows ?? [])) as Array<{
    tokens: number | string;
    last_allowed: boolean;
  }>;
  const row = rows[0];
  if (!row || row.last_allowed) return null;
  return Math.ceil(((1 - Number(row.tokens)) / limit.perSec) * 1000);
}

/**
 * Takes a token from the client address's bucket (when the address is known), for requests that
 * cost a password hash without naming an account: sign-ups and sign-ups through invitations.
 */
export async function takeAddressToken(ctx: ServiceContext): Promise<void> {
  if (!ctx.clientIp) return;
  const wait = await takeLoginToken(ctx.db, `ip:${ctx.clientIp}`, accountSettings(ctx).loginLimitPerIp);
  if (wait !== null) throw new LoginRateLimitedError(wait);
}
