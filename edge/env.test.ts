import { describe, expect, it } from "vitest";
import { edgeConfigFrom, parseEnv } from "./env.js";
import { defaultAccountSettings } from "./services/accounts/settings.js";
import { defaultWebhookSettings } from "./services/webhooks/settings.js";

describe("parseEnv", () => {
  it("applies defaults", () => {
    const parsed = parseEnv({});
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(parsed.env).toMatchObject({
      WRENN_PORT: 3000,
      WRENN_DATA_DIR: "./.wrenn",
      WRENN_MAX_UPLOAD_BYTES: 1024 ** 3,
    });
    expect(edgeConfigFrom(parsed.env)).toEqual({
      maxUploadBytes: 1024 ** 3,
      maxJsonBytes: 1024 ** 2,
      rateLimit: { perSec: 20, burst: 100 },
      commandHistoryDays: 7,
      webhooks: defaultWebhookSettings,
      accounts: defaultAccountSettings,
      // A template build's COPY archive is kept in Postgres: 64 MiB each at most by default.
      templateFileMaxBytes: 64 * 1024 ** 2,
    });
  });

  it("turns the default rate limit off with WRENN_RATE_LIMIT_PER_SEC=0 and rejects a zero burst", () => {
    const off = parseEnv({ WRENN_RATE_LIMIT_PER_SEC: "0" });
    expect(off.ok && edgeConfigFrom(off.env).rateLimit).toBeUndefined();
    const tuned = parseEnv({ WRENN_RATE_LIMIT_PER_SEC: "0.5", WRENN_RATE_LIMIT_BURST: "3" });
    expect(tuned.ok && edgeConfigFrom(tuned.env).rateLimit).toEqual({ perSec: 0.5, burst: 3 });
    const bad = parseEnv({ WRENN_RATE_LIMIT_BURST: "0" });
    expect(bad.ok ? {} : bad.errors).toHaveProperty("WRENN_RATE_LIMIT_BURST");
  });

  it("coerces numbers and reports every bad field by name", () => {
    const parsed = parseEnv({
      WRENN_PORT: "70000",
      WRENN_ENCRYPTION_KEY: "abc",
      DATABASE_URL: "mysql://x",
      WRENN_MAX_UPLOAD_BYTES: "ten",
    });
    expect(parsed.ok).toBe(false);
    if (parsed.ok) return;
    expect(Object.keys(parsed.errors).sort()).toEqual([
      "DATABASE_URL",
      "WRENN_ENCRYPTION_KEY",
      "WRENN_MAX_UPLOAD_BYTES",
      "WRENN_PORT",
    ]);
    expect(parsed.errors.WRENN_ENCRYPTION_KEY).toMatch(/64 hex/);
  });

  it("accepts a full configuration", () => {
    const parsed = parseEnv({
      WRENN_PORT: "8080",
      DATABASE_URL: "postgres://u:p@h/db",
      WRENN_ENCRYPTION_KEY: "a".repeat(64),
      WRENN_MAX_UPLOAD_BYTES: "1048576",
    });
    expect(parsed.ok && parsed.env.WRENN_PORT === 8080 && parsed.env.WRENN_MAX_UPLOAD_BYTES === 1_048_576).toBe(true);
  });
});
