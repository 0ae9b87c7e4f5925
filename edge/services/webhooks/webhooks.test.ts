import { describe, expect, it } from "vitest";
import { verifyWebhookSignature } from "../../../sdk/webhooks.js";
import { sandboxEventType } from "../events/types.js";
import { nextAttemptAt, retryDelayMs } from "./backoff.js";
import { defaultWebhookSettings } from "./settings.js";
import { deliveryHeaders, newWebhookSecret, signWebhook, webhookHeaders } from "./signature.js";
import { checkWebhookUrl, refusedAddressReason } from "./url-policy.js";

describe("webhook signatures", () => {
  const body = JSON.stringify({ id: "evt_1", type: "sandbox.killed", data: { a: "é" } });
  const now = new Date("2026-12-07T12:00:00Z");

  it("signs HMAC-SHA256 over timestamp, a dot and the body, as the docs' recipe computes it", async () => {
    const secret = newWebhookSecret();
    expect(secret).toMatch(/^whsec_[A-Za-z0-9]{40}$/);
    const ts = Math.floor(now.getTime() / 1000);
    const enc = new TextEncoder();
    const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
    ]);
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(`${ts}.${body}`)));
    const recipe = Buffer.from(mac).toString("hex");
    expect(await signWebhook(secret, ts, body)).toBe(`v1=${recipe}`);
  });

  it("the SDK's verify accepts a delivery and refuses a changed body, another secret, or an old timestamp", async () => {
    const secret = newWebhookSecret();
    const headers = await deliveryHeaders({
      secret,
      deliveryId: "whd_x",
      eventType: "sandbox.killed",
      attempt: 1,
      body,
      now,
    });
    expect(headers[webhookHeaders.id]).toBe("whd_x");
    expect(await verifyWebhookSignature(secret, headers, body, { now })).toBe(true);
    expect(await verifyWebhookSignature(secret, new Headers(headers), new TextEncoder().encode(body), { now })).toBe(
      true,
    );
    expect(await verifyWebhookSignature(secret, headers, body.replace("killed", "paused"), { now })).toBe(false);
    expect(await verifyWebhookSignature(newWebhookSecret(), headers, body, { now })).toBe(false);
    const later = new Date(now.getTime() + 301_000);
    expect(await verifyWebhookSignature(secret, headers, body, { now: later })).toBe(false);
    const { [webhookHeaders.signature]: _, ...unsigned } = headers;
    expect(await verifyWebhookSignature(secret, unsigned, body, { now })).toBe(false);
  });
});

describe("retry back-off", () => {
  const settings = { retryBaseMs: 1_000, retryMaxMs: 60_000, retryForMs: 3_600_000 };

  it("doubles from the base, caps at the maximum, with jitter between half and all of it", () => {
    expect([1, 2, 3, 4, 5].map((n) => retryDelayMs(n, settings, () => 1))).toEqual([
      1_000, 2_000, 4_000, 8_000, 16_000,
    ]);
    expect(retryDelayMs(30, settings, () => 1)).toBe(60_000);
    expect(retryDelayMs(3, settings, () => 0)).toBe(2_000);
    for (let i = 0; i < 100; i++) {
      const d = retryDelayMs(4, settings);
      expect(d).toBeGreaterThanOrEqual(4_000);
      expect(d).toBeLessThanOrEqual(8_000);
    }
  });

  it("gives up once the next attempt would fall outside the retry window", () => {
    const queued = new Date(0);
    expect(nextAttemptAt(queued, 1, new Date(1_000), settings, () => 1)?.getTime()).toBe(2_000);
    expect(nextAttemptAt(queued, 10, new Date(3_590_000), settings, () => 1)).toBeNull();
  });

  it("spreads the production schedule over the 24 hours", () => {
    let at = 0;
    let attempts = 1;
    const queued = new Date(0);
    for (;;) {
      const next = nextAttemptAt(queued, attempts, new Date(at), defaultWebhookSettings, () => 1);
      if (!next) break;
      at = next.getTime();
      attempts++;
    }
    expect(attempts).toBeGreaterThan(20);
    expect(at).toBeGreaterThan(22 * 3_600_000);
  });
});

describe("webhook URL policy (SSRF)", () => {
  const refuse = (url: string) => expect(() => checkWebhookUrl(url, { allowPrivate: false })).toThrow(/webhook URL/);

  it("refuses loopback, private, link-local, metadata and this-machine names, in every spelling", () => {
    for (const url of [
      "http://127.0.0.1:8080/hook",
      "http://2130706433/",
      "http://0x7f.0.0.1/",
      "http://0/",
      "http://[::1]/",
      "http://[::ffff:127.0.0.1]/",
      "http://[64:ff9b::a00:1]/",
      "http://10.1.2.3/",
      "http://172.31.0.1/",
      "http://192.168.1.1/",
      "http://100.64.0.1/",
      "http://169.254.169.254/latest/meta-data/",
      "http://[fe80::1]/",
      "http://[fd00::1]/",
      "http://localhost:3000/",
      "http://api.localhost/",
      "http://metadata.google.internal/",
      "ftp://example.com/",
      "http://user:pass@example.com/",
      "not a url",
    ]) {
      refuse(url);
    }
  });

  it("accepts public addresses and names, and private ones when the operator allows them", () => {
    expect(checkWebhookUrl("https://hooks.example.com/x?y=1", { allowPrivate: false })).toBe(
      "https://hooks.example.com/x?y=1",
    );
    expect(checkWebhookUrl("http://[2001:db8::1]:8443/", { allowPrivate: false })).toBe("http://[2001:db8::1]:8443/");
    expect(checkWebhookUrl("http://127.0.0.1:9/", { allowPrivate: true })).toBe("http://127.0.0.1:9/");
  });

  it("classifies resolved addresses", () => {
    expect(refusedAddressReason("127.0.0.53")).toBe("loopback");
    expect(refusedAddressReason("::1")).toBe("loopback");
    expect(refusedAddressReason("93.184.216.34")).toBeUndefined();
  });
});

describe("public event types of sandbox changes", () => {
  it("maps settled states and stop reasons, and skips transitional states", () => {
    expect(sandboxEventType(null, "pending", null)).toBe("sandbox.created");
    expect(sandboxEventType("pending", "running", null)).toBe("sandbox.running");
    expect(sandboxEventType("running", "pausing", null)).toBeNull();
    expect(sandboxEventType("pausing", "paused", null)).toBe("sandbox.paused");
    expect(sandboxEventType("resuming", "running", null)).toBe("sandbox.resumed");
    expect(sandboxEventType("running", "stopped", "killed")).toBe("sandbox.killed");
    expect(sandboxEventType("running", "stopped", "timeout")).toBe("sandbox.timed_out");
    expect(sandboxEventType("missing", "stopped", "lost")).toBe("sandbox.errored");
    expect(sandboxEventType("pending", "error", null)).toBe("sandbox.errored");
    expect(sandboxEventType("running", "missing", null)).toBeNull();
    expect(sandboxEventType("missing", "running", null)).toBeNull();
    expect(sandboxEventType("running", "running", null)).toBeNull();
  });
});
