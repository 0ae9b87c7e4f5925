import type { WebhookSettings } from "./settings.js";

/**
 * Delay before retry number `failedAttempts` (1 after the first failure): `retryBaseMs · 2^(n−1)`,
 * capped at `retryMaxMs`, then scaled by a random factor in [0.5, 1] ("equal jitter"), so receivers
 * that failed together are not hit together again. `random` is injectable for tests.
 */
export function retryDelayMs(
  failedAttempts: number,
  settings: Pick<WebhookSettings, "retryBaseMs" | "retryMaxMs">,
  random: () => number = Math.random,
): number {
  const exponent = Math.max(0, failedAttempts - 1);
  const full = Math.min(settings.retryMaxMs, settings.retryBaseMs * 2 ** Math.min(exponent, 40));
  return Math.round(full * (0.5 + random() / 2));
}

/**
 * When the next attempt of a delivery queued at `queuedAt` goes, after `failedAttempts` failures; null
 * when that would be past the retry window (`retryForMs`): the delivery is then given up on.
 */
export function nextAttemptAt(
  queuedAt: Date,
  failedAttempts: number,
  now: Date,
  settings: Pick<WebhookSettings, "retryBaseMs" | "retryMaxMs" | "retryForMs">,
  random: () => number = Math.random,
): Date | null {
  const at = new Date(now.getTime() + retryDelayMs(failedAttempts, settings, random));
  return at.getTime() - queuedAt.getTime() > settings.retryForMs ? null : at;
}
