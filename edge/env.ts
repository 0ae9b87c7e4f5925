import { z } from "zod";
import { type AccountSettings, defaultAccountSettings } from "./services/accounts/settings.js";
import { defaultWebhookSettings, type WebhookSettings } from "./services/webhooks/settings.js";

const intFromString = (fallback: number) => z.coerce.number().int().positive().default(fallback);

/**
 * Every setting of the edge, parsed once from the environment (process.env on Node, bindings on
 * Workers) and passed down as a value. Nothing else under edge/ reads the environment.
 */
export const zEnv = z.object({
  /** Port of the Node server. */
  WRENN_PORT: z.coerce.number().int().min(0).max(65_535).default(3000),
  /** Interface the Node server listens on. */
  WRENN_HOST: z.string().min(1).default("0.0.0.0"),
  /** PGlite data directory on Node when DATABASE_URL is unset. */
  WRENN_DATA_DIR: z.string().min(1).default("./.wrenn"),
  /** PostgreSQL URL (node-postgres on Node, Neon serverless on Workers). */
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL")
    .optional(),
  /** 64 hex characters (32 bytes): AES-GCM key for host and envd tokens at rest. */
  WRENN_ENCRYPTION_KEY: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, "must be 64 hex characters (32 bytes)")
    .optional(),
  /** An admin API key to install at start (useful for automation); otherwise one is generated on first run. */
  WRENN_ADMIN_API_KEY: z.string().min(24, "must be at least 24 characters").optional(),
  /** Largest accepted `files/write` upload, in bytes. */
  WRENN_MAX_UPLOAD_BYTES: intFromString(1024 ** 3),
  /** Largest accepted JSON request body, in bytes. */
  WRENN_MAX_JSON_BYTES: intFromString(1024 ** 2),
  /** Largest COPY archive a template build may upload, in bytes (kept in Postgres; 413 beyond). */
  WRENN_TEMPLATE_FILE_MAX_BYTES: intFromString(64 * 1024 ** 2),
  /** Seconds between reconcile sweeps on Node; 0 turns the Node sweep off (Workers use the cron trigger). */
  WRENN_RECONCILE_INTERVAL_SEC: z.coerce.number().int().min(0).default(30),
  /** Seconds a sandbox may run on a host unknown to (or stopped in) the database before the sweep destroys it. */
  WRENN_RECONCILE_ORPHAN_GRACE_SEC: intFromString(60),
  /** Seconds a sandbox may stay pending/starting (or pausing/resuming) before the sweep settles it. */
  WRENN_RECONCILE_STUCK_SEC: intFromString(600),
  /** Failed sweeps in a row after which a host is unhealthy and its sandboxes missing. */
  WRENN_HOST_UNHEALTHY_AFTER: intFromString(3),
  /**
   * Workers only, for PostgreSQL without Neon's WebSocket endpoint (local development, tests): a
   * WebSocket→TCP proxy as `host:port/path` (e.g. `127.0.0.1:5480/v2`); the Neon driver then connects
   * through `ws://<proxy>?address=<db host>:<db port>` without TLS.
   */
  WRENN_NEON_WSPROXY: z.string().min(1).optional(),
  /**
   * Domain of sandbox hosts (`<port>-<sandboxId>.<domain>`), returned to E2B SDKs as the sandbox
   * `domain`; default: the Host the E2B API was called on.
   */
  WRENN_SANDBOX_DOMAIN: z
    .string()
    .regex(/^[A-Za-z0-9.-]+(:[0-9]{1,5})?$/, "must be a host name, optionally with :port")
    .optional(),
  /**
   * Default request rate per API key, in requests per second (a token bucket shared by every edge
   * through the database); 0 turns the default limit off (per-key overrides still apply).
   */
  WRENN_RATE_LIMIT_PER_SEC: z.coerce.number().min(0).max(1_000_000).default(20),
  /** Default bucket size per API key: how many requests may come at once after a quiet spell. */
  WRENN_RATE_LIMIT_BURST: z.coerce.number().int().min(1).max(1_000_000).default(100),
  /**
   * Who may sign up with an email and a password (docs/accounts.md): `invite` (default) only people
   * holding an invitation link, `open` anyone, each with a team of their own. The first user of an
   * install may always sign up, and becomes the instance admin.
   */
  WRENN_SIGNUP: z.enum(["invite", "open"]).default("invite"),
  /** PBKDF2-SHA256 iterations of new password hashes; older hashes are upgraded at sign-in. */
  WRENN_PASSWORD_ITERATIONS: z.coerce.number().int().min(100_000).max(10_000_000).default(600_000),
  /**
   * `true` only behind a reverse proxy that sets X-Forwarded-For and X-Forwarded-Proto: the client
   * address (sign-in limits, audit log) and whether session cookies are `Secure` are then read from them.
   */
  WRENN_TRUST_PROXY: z.enum(["true", "false"]).default("false"),
  /** Log level. */
  WRENN_LOG_LEVEL: z.enum(["debug", "info", "warn", "error", "silent"]).default("info"),
  /**
   * Node only: a PEM certificate (chain) and its key; with both, the edge also serves HTTPS on
   * WRENN_TLS_PORT (API, proxy and host-routed sandbox URLs alike). The certificate should name
   * `*.<WRENN_SANDBOX_DOMAIN>` so that `<port>-<id>.<domain>` URLs verify.
   */
  WRENN_TLS_CERT_FILE: z.string().min(1).optional(),
  WRENN_TLS_KEY_FILE: z.string().min(1).optional(),
  /** Port of the HTTPS listener (with WRENN_TLS_CERT_FILE and WRENN_TLS_KEY_FILE). */
  WRENN_TLS_PORT: z.coerce.number().int().min(0).max(65_535).default(3443),
  /** Days the command history (docs/command-history.md) is kept, counted from each command's end. */
  WRENN_COMMAND_HISTORY_DAYS: z.coerce.number().min(0.001).max(3650).default(7),
  /**
   * Node only: milliseconds between pulls of the hosts running background commands that are owed a
   * callback (so it need not wait for the sweep); 0 leaves them to the sweep.
   */
  WRENN_COMMAND_CALLBACK_POLL_MS: z.coerce.number().int().min(0).default(2000),
  /**
   * Webhooks (docs/events-and-webhooks.md). `true` lets webhook and callback URLs reach private,
   * loopback, link-local and metadata addresses (tests, private networks); refused by default.
   */
  WRENN_WEBHOOKS_ALLOW_PRIVATE: z.enum(["true", "false"]).default("false"),
  /** Failed delivery attempts in a row after which a webhook is disabled. */
  WRENN_WEBHOOK_DISABLE_AFTER: intFromString(20),
  /** Milliseconds before a delivery's first retry; each later one doubles (with jitter) up to an hour. */
  WRENN_WEBHOOK_RETRY_BASE_MS: intFromString(5_000),
  /** Seconds a delivery is retried before it is given up on. */
  WRENN_WEBHOOK_RETRY_FOR_SEC: intFromString(86_400),
  /** Milliseconds between delivery runs on Node; 0 turns the Node loop off (Workers use the cron trigger). */
  WRENN_WEBHOOK_INTERVAL_MS: z.coerce.number().int().min(0).default(500),
  /**
   * Bearer token GET /metrics asks for (docs/observability.md); unset: /metrics answers 404. A token
   * of its own, not an admin API key, since it sits in a scraper's configuration.
   */
  WRENN_METRICS_TOKEN: z.string().min(16, "must be at least 16 characters").optional(),
  /**
   * OTLP/HTTP collector base URL (e.g. `http://127.0.0.1:4318`); the Node edge exports its request
   * spans to `<url>/v1/traces`. Unset: no spans are exported (a `traceparent` is still passed on).
   * Workers only pass the trace context on (docs/observability.md).
   */
  OTEL_EXPORTER_OTLP_ENDPOINT: z.string().url().optional(),
});

/** The parsed environment. */
export type Env = z.infer<typeof zEnv>;

/** Settings the request handlers need (the subset of `Env` that is not about process start-up). */
export interface EdgeConfig {
  maxUploadBytes: number;
  maxJsonBytes: number;
  /** Domain of sandbox hosts for the E2B surface (`WRENN_SANDBOX_DOMAIN`); unset: the API's Host. */
  sandboxDomain?: string;
  /** Default request rate per API key; unset: keys without their own rate are not limited. */
  rateLimit?: { perSec: number; burst: number };
  /** Webhook deliveries; unset: `defaultWebhookSettings`. */
  webhooks?: WebhookSettings;
  /** Days the command history is kept; unset: 7. */
  commandHistoryDays?: number;
  /** Users, sessions and sign-in limits; unset: `defaultAccountSettings`. */
  accounts?: AccountSettings;
  /** Largest COPY archive of a template build, in bytes; unset: 64 MiB. */
  templateFileMaxBytes?: number;
}

/** Parses an environment record; on failure returns the field messages instead of throwing. */
export function parseEnv(
  source: Record<string, unknown>,
): { ok: true; env: Env } | { ok: false; errors: Record<string, string> } {
  const parsed = zEnv.safeParse(source);
  const errors: Record<string, string> = {};
  if (parsed.success) {
    const { WRENN_TLS_CERT_FILE: cert, WRENN_TLS_KEY_FILE: key } = parsed.data;
    if ((cert === undefined) === (key === undefined)) return { ok: true, env: parsed.data };
    const missing = cert === undefined ? "WRENN_TLS_CERT_FILE" : "WRENN_TLS_KEY_FILE";
    errors[missing] = "HTTPS needs both WRENN_TLS_CERT_FILE and WRENN_TLS_KEY_FILE";
    return { ok: false, errors };
  }
  for (const issue of parsed.error.issues) errors[issue.path.join(".") || "(root)"] = issue.message;
  return { ok: false, errors };
}

/** The request-handling settings of a parsed environment. */
export function edgeConfigFrom(env: Env): EdgeConfig {
  const config: EdgeConfig = { maxUploadBytes: env.WRENN_MAX_UPLOAD_BYTES, maxJsonBytes: env.WRENN_MAX_JSON_BYTES };
  if (env.WRENN_SANDBOX_DOMAIN) config.sandboxDomain = env.WRENN_SANDBOX_DOMAIN;
  config.commandHistoryDays = env.WRENN_COMMAND_HISTORY_DAYS;
  config.templateFileMaxBytes = env.WRENN_TEMPLATE_FILE_MAX_BYTES;
  config.webhooks = {
    ...defaultWebhookSettings,
    allowPrivate: env.WRENN_WEBHOOKS_ALLOW_PRIVATE === "true",
    disableAfter: env.WRENN_WEBHOOK_DISABLE_AFTER,
    retryBaseMs: env.WRENN_WEBHOOK_RETRY_BASE_MS,
    retryForMs: env.WRENN_WEBHOOK_RETRY_FOR_SEC * 1000,
  };
  config.accounts = {
    ...defaultAccountSettings,
    signup: env.WRENN_SIGNUP,
    passwordIterations: env.WRENN_PASSWORD_ITERATIONS,
    trustProxy: env.WRENN_TRUST_PROXY === "true",
  };
  if (env.WRENN_RATE_LIMIT_PER_SEC > 0)
    config.rateLimit = { perSec: env.WRENN_RATE_LIMIT_PER_SEC, burst: env.WRENN_RATE_LIMIT_BURST };
  return config;
}
