import type { Principal } from "../context.js";

/**
 * A small per-instance cache of verified API keys, keyed by the secret as sent, so most requests skip
 * both the SHA-256 and the key lookup. (The secret is only held as long as the entry lives; the process
 * sees it on every request anyway.) Entries live `ttlMs`; a revoke or change on this instance drops
 * the key at once. Other instances (other Workers isolates, other Node processes) see it on the key's
 * next request when the key is rate-limited (the bucket statement re-reads the key row, see
 * services/auth/authenticate.ts), and otherwise within `ttlMs`. Expiry is checked on every hit.
 */
export interface ApiKeyCache {
  get(secret: string, now: number): Principal | undefined;
  /**
   * Counts revokes seen by this cache. A caller reads it before looking a key up and passes it to
   * `set`, so a lookup that raced a revoke on this instance is not cached.
   */
  generation(): number;
  set(secret: string, principal: Principal, now: number, generation: number): void;
  /** Forgets every entry of a key (after a revoke). */
  forgetKey(keyId: string): void;
}

/** How long a verified key is trusted without a database lookup. */
export const apiKeyCacheTtlMs = 10_000;

/** An in-memory ApiKeyCache holding at most `maxEntries` keys (oldest dropped first). */
export function createApiKeyCache(ttlMs = apiKeyCacheTtlMs, maxEntries = 10_000): ApiKeyCache {
  const entries = new Map<string, { principal: Principal; expiresAt: number }>();
  let revokes = 0;
  return {
    get(secret, now) {
      const entry = entries.get(secret);
      if (!entry) return undefined;
      if (entry.expiresAt <= now) {
        entries.delete(secret);
        return undefined;
      }
      return entry.principal;
    },
    generation: () => revokes,
    set(secret, principal, now, generation) {
      if (generation !== revokes) return;
      if (entries.size >= maxEntries) {
        const oldest = entries.keys().next();
        if (!oldest.done) entries.delete(oldest.value);
      }
      entries.set(secret, { principal, expiresAt: now + ttlMs });
    },
    forgetKey(keyId) {
      revokes++;
      for (const [secret, entry] of entries) if (entry.principal.keyId === keyId) entries.delete(secret);
    },
  };
}
