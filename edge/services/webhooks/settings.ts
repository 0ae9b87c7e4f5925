/**
 * How webhook deliveries behave (docs/events-and-webhooks.md); parsed once from the environment
 * (edge/env.ts) and carried in `EdgeConfig.webhooks`.
 */
export interface WebhookSettings {
  /** Whether webhook and callback URLs may point at private, loopback, link-local or metadata addresses. */
  allowPrivate: boolean;
  /** Failed attempts in a row after which a webhook is disabled (and `webhook.disabled` recorded). */
  disableAfter: number;
  /** Delay before the first retry; each later one doubles it (with jitter), up to `retryMaxMs`. */
  retryBaseMs: number;
  retryMaxMs: number;
  /** How long after it was queued a delivery is still retried; then it is `failed`. */
  retryForMs: number;
  /** Time an attempt may take, connect to last byte read. */
  timeoutMs: number;
  /** How long a loop holds a claimed delivery before another loop may take it over. */
  leaseMs: number;
}

/** The settings without any environment: production values. */
export const defaultWebhookSettings: WebhookSettings = {
  allowPrivate: false,
  disableAfter: 20,
  retryBaseMs: 5_000,
  retryMaxMs: 3_600_000,
  retryForMs: 24 * 3_600_000,
  timeoutMs: 10_000,
  leaseMs: 60_000,
};
