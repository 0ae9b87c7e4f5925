import { randomString } from "../ids.js";

/** Header names of every webhook and callback delivery (docs/events-and-webhooks.md). */
export const webhookHeaders = {
  /** The delivery's id: the same on every retry of it, so a receiver can drop duplicates. */
  id: "wrenn-webhook-id",
  /** Unix seconds when this attempt was signed; receivers refuse old ones (replay). */
  timestamp: "wrenn-webhook-timestamp",
  /** `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. */
  signature: "wrenn-webhook-signature",
  /** The event's type, e.g. `sandbox.killed`. */
  event: "wrenn-webhook-event",
  /** 1 for the first attempt of the delivery, then 2, 3, … */
  attempt: "wrenn-webhook-attempt",
} as const;

const encoder = new TextEncoder();

/** A new signing secret: `whsec_` and 40 base62 characters (about 238 bits). */
export function newWebhookSecret(): string {
  return `whsec_${randomString(40, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")}`;
}

function toHex(bytes: ArrayBuffer): string {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The signature header's value for `body` sent at `timestampSec`: HMAC-SHA256 keyed with the secret's
 * UTF-8 bytes over `${timestampSec}.${body}`, in hex, prefixed `v1=`. Web Crypto, so Workers run it too.
 */
export async function signWebhook(secret: string, timestampSec: number, body: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const mac = await crypto.subtle.sign("HMAC", key, encoder.encode(`${timestampSec}.${body}`));
  return `v1=${toHex(mac)}`;
}

/** Every header of one attempt. */
export async function deliveryHeaders(options: {
  secret: string;
  deliveryId: string;
  eventType: string;
  attempt: number;
  body: string;
  now: Date;
}): Promise<Record<string, string>> {
  const timestamp = Math.floor(options.now.getTime() / 1000);
  return {
    "content-type": "application/json",
    "user-agent": "Wrenn-Webhooks/1",
    [webhookHeaders.id]: options.deliveryId,
    [webhookHeaders.timestamp]: String(timestamp),
    [webhookHeaders.signature]: await signWebhook(options.secret, timestamp, options.body),
    [webhookHeaders.event]: options.eventType,
    [webhookHeaders.attempt]: String(options.attempt),
  };
}
