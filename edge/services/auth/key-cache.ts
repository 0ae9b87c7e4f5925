import type { Principal } from "../context.js";

/**
 * A small per-instance cache of verified API keys (by hash), so most requests skip the key lookup.
 * Entries live `ttlMs`; a revoke on this instance drops the key at once, and other instances (other
 * Workers isolates, other Node processes) stop accepting it within `ttlMs`.
 */
export interface ApiKeyCache {
  get(hash: string, now: number): Principal | undefined;
  set(hash: string, principal: Principal, now: number): void;
  /** Forgets every entry of a key (after a revoke). */
  forgetKey(keyId: string): void;
}

/** How long a verified key is trusted without a database lookup. */
export const apiKeyCacheTtlMs = 10_000;

/** An in-memory ApiKeyCache holding at most `maxEntries` keys (oldest dropped first). */
export function createApiKeyCache(ttlMs = apiKeyCacheTtlMs, maxEntries = 10_000): ApiKeyCache {
  const entries = new Map<string, { principal: Principal; expiresAt: number }>();
  return {
    get(hash, now) {
      const entry = entries.get(hash);
      if (!entry) return undefined;
      if (entry.expiresAt <= now) {
        entries.delete(hash);
        return undefined;
      }
      return entry.principal;
    },
    set(hash, principal, now) {
      if (entries.size >= maxEntries) {
        const oldest = entries.keys().next();
        if (!oldest.done) entries.delete(oldest.value);
      }
      entries.set(hash, { principal, expiresAt: now + ttlMs });
    },
    forgetKey(keyId) {
      for (const [hash, entry] of entries) if (entry.principal.keyId === keyId) entries.delete(hash);
    },
  };
}
