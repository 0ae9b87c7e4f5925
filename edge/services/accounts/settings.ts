import type { RateLimit } from "../rate-limit/take-token.js";

/** Who may sign up (WRENN_SIGNUP): anyone, or only people holding an invitation (the first user always may). */
export type SignupPolicy = "open" | "invite";

/** Account settings of the edge (EdgeConfig.accounts); docs/accounts.md explains each. */
export interface AccountSettings {
  signup: SignupPolicy;
  /** PBKDF2-SHA256 iterations of new password hashes. */
  passwordIterations: number;
  /** Honour X-Forwarded-For / X-Forwarded-Proto (only behind a proxy that sets them). */
  trustProxy: boolean;
  /** A session ends this long after its last use… */
  sessionIdleMs: number;
  /** …and this long after sign-in, whatever its use. */
  sessionAbsoluteMs: number;
  /** How long an invitation link works. */
  invitationTtlMs: number;
  /** Sign-in attempts per email address and per client address. */
  loginLimitPerEmail: RateLimit;
  loginLimitPerIp: RateLimit;
}

/** OWASP's current advice for PBKDF2-HMAC-SHA256 (Password Storage Cheat Sheet). */
export const defaultPasswordIterations = 600_000;

const day = 86_400_000;

/** The defaults (docs/accounts.md). */
export const defaultAccountSettings: AccountSettings = {
  signup: "invite",
  passwordIterations: defaultPasswordIterations,
  trustProxy: false,
  sessionIdleMs: 7 * day,
  sessionAbsoluteMs: 30 * day,
  invitationTtlMs: 7 * day,
  // 10 attempts at once, then one a minute: a person mistyping never notices, a guesser gets 1,440 a day.
  loginLimitPerEmail: { perSec: 1 / 60, burst: 10 },
  // A shared office or NAT address gets more room; a spray across many emails from one address stops.
  loginLimitPerIp: { perSec: 0.5, burst: 30 },
};
