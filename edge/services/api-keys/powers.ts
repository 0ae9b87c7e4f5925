import { type ApiKeyScope, defaultKeyScopes } from "../auth/scopes.js";
import type { Principal } from "../context.js";
import { ServiceError } from "../errors.js";

/**
 * The stored (non-admin) scopes of a key a caller creates or changes. A non-admin caller can only
 * hand out scopes it holds itself, so `keys:write` never escalates; without a list the new key gets
 * the caller's own scopes (for an admin caller: every non-admin scope).
 */
export function grantableScopes(caller: Principal, requested: readonly ApiKeyScope[] | undefined): string[] {
  const wanted = requested?.filter((s) => s !== "admin");
  if (caller.isAdmin) return [...new Set(wanted ?? defaultKeyScopes)];
  if (wanted === undefined) return caller.scopes.filter((s) => s !== "admin");
  const missing = wanted.filter((s) => !caller.scopes.includes(s));
  if (missing.length > 0) {
    throw new ServiceError("FORBIDDEN", `a key cannot grant scopes it does not hold: ${missing.join(", ")}`, {
      details: { scopes: missing },
    });
  }
  return [...new Set(wanted)];
}

/**
 * The expiry of a key a non-admin caller creates or changes: never later than the caller's own, so
 * a short-lived key cannot mint a longer-lived one. `requested === null` asks for "never".
 */
export function grantableExpiry(caller: Principal, requested: Date | null | undefined): Date | null {
  const own = caller.isAdmin ? null : (caller.expiresAt ?? null);
  if (requested === undefined) return own;
  if (own && (requested === null || requested.getTime() > own.getTime())) {
    throw new ServiceError("FORBIDDEN", `a key cannot outlive the key that makes it (${own.toISOString()})`, {
      details: { expiresAt: `at most ${own.toISOString()}` },
    });
  }
  return requested;
}

/** Throws FORBIDDEN unless the caller is an admin key; `what` completes "only admin keys may …". */
export function requireAdminCaller(caller: Principal, what: string): void {
  if (!caller.isAdmin) throw new ServiceError("FORBIDDEN", `only admin keys may ${what}`);
}
