import { type ApiClient, segment } from "./http.js";
import { readServerSentEvents } from "./sse.js";

/** An event (docs/events-and-webhooks.md): what `GET /v1/events`, the stream and webhooks carry. */
export interface EventInfo {
  /** `evt_<n>`; n only grows. */
  id: string;
  type: string;
  teamId: string | null;
  sandboxId: string | null;
  hostId: string | null;
  actor: string;
  data: Record<string, unknown>;
  createdAt: string;
}

/** Filters of `Events.list` and `Events.stream`. */
export interface EventFilterOptions {
  /** Event types, e.g. `["sandbox.killed", "sandbox.timed_out"]`. */
  types?: string[];
  sandboxId?: string;
  since?: Date | string;
  until?: Date | string;
}

/** A webhook (never with its secret). */
export interface WebhookInfo {
  id: string;
  url: string;
  description: string;
  eventTypes: string[];
  enabled: boolean;
  operator: boolean;
  consecutiveFailures: number;
  disabledAt: string | null;
  disabledReason: string | null;
  createdAt: string;
  updatedAt: string;
}

/** A new webhook and its signing secret, which only this answer has. */
export interface CreatedWebhookInfo extends WebhookInfo {
  secret: string;
}

/** Fields of a new or changed webhook. */
export interface WebhookRequest {
  url?: string;
  /** Types (or prefixes like `sandbox.*`) to receive; empty: everything. */
  eventTypes?: string[];
  description?: string;
  enabled?: boolean;
}

/** One attempt of a delivery. */
export interface DeliveryAttemptInfo {
  attempt: number;
  ok: boolean;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
  startedAt: string;
}

/** A delivery and its attempts. */
export interface DeliveryInfo {
  id: string;
  webhookId: string | null;
  eventId: string | null;
  eventType: string;
  status: "pending" | "succeeded" | "failed";
  attempts: number;
  nextAttemptAt: string | null;
  lastStatusCode: number | null;
  lastError: string | null;
  lastDurationMs: number | null;
  deliveredAt: string | null;
  createdAt: string;
  log: DeliveryAttemptInfo[];
}

const iso = (t: Date | string | undefined) => (t instanceof Date ? t.toISOString() : t);

function filterQuery(options: EventFilterOptions): Record<string, string | undefined> {
  return {
    type: options.types?.join(","),
    sandboxId: options.sandboxId,
    since: iso(options.since),
    until: iso(options.until),
  };
}

/** The team's lifecycle events: a paged list and a live stream. */
export class Events {
  constructor(private readonly api: ApiClient) {}

  /** One page, newest first unless `order: "asc"`; pass `nextCursor` back as `cursor` for the next. */
  async list(
    options: EventFilterOptions & { cursor?: string; limit?: number; order?: "asc" | "desc" } = {},
  ): Promise<{ events: EventInfo[]; nextCursor?: string }> {
    return this.api.json("GET", "/v1/events", {
      query: {
        ...filterQuery(options),
        cursor: options.cursor,
        limit: options.limit === undefined ? undefined : String(options.limit),
        order: options.order,
      },
    });
  }

  /**
   * Follows events as they happen (after `after`, an event id, when given; else from now on) until
   * `signal` aborts. Reconnects after a dropped or ended stream from the last event seen.
   */
  async *stream(
    options: EventFilterOptions & { after?: string; signal?: AbortSignal } = {},
  ): AsyncGenerator<EventInfo> {
    let after = options.after;
    while (!options.signal?.aborted) {
      const res = await this.api.raw("GET", "/v1/events/stream", {
        query: filterQuery(options),
        headers: after ? { "last-event-id": after } : {},
        ...(options.signal ? { signal: options.signal } : {}),
        timeoutMs: 0,
      });
      if (!res.body) return;
      try {
        for await (const message of readServerSentEvents(res.body)) {
          const event = JSON.parse(message.data) as EventInfo;
          after = event.id;
          yield event;
        }
      } catch (err) {
        if (options.signal?.aborted) return;
        throw err;
      }
    }
  }
}

/** Webhook subscriptions of the team, their delivery logs, and the callback secret. */
export class Webhooks {
  constructor(private readonly api: ApiClient) {}

  /** Creates a webhook; the answer's `secret` is shown this once. */
  async create(request: WebhookRequest & { url: string }): Promise<CreatedWebhookInfo> {
    return this.api.json("POST", "/v1/webhooks", { json: request });
  }

  async list(): Promise<WebhookInfo[]> {
    return (await this.api.json<{ webhooks: WebhookInfo[] }>("GET", "/v1/webhooks")).webhooks;
  }

  async get(webhookId: string): Promise<WebhookInfo> {
    return this.api.json("GET", `/v1/webhooks/${segment(webhookId)}`);
  }

  /** Changes a webhook; `enabled: true` re-enables a disabled one and clears its failure count. */
  async update(webhookId: string, request: WebhookRequest): Promise<WebhookInfo> {
    return this.api.json("PATCH", `/v1/webhooks/${segment(webhookId)}`, { json: request });
  }

  async delete(webhookId: string): Promise<void> {
    await this.api.empty("DELETE", `/v1/webhooks/${segment(webhookId)}`);
  }

  /** The delivery log, newest first, each delivery with its attempts. */
  async deliveries(
    webhookId: string,
    options: { limit?: number; cursor?: string; status?: DeliveryInfo["status"] } = {},
  ): Promise<{ deliveries: DeliveryInfo[]; nextCursor?: string }> {
    return this.api.json("GET", `/v1/webhooks/${segment(webhookId)}/deliveries`, {
      query: {
        limit: options.limit === undefined ? undefined : String(options.limit),
        cursor: options.cursor,
        status: options.status,
      },
    });
  }

  /** Sends a delivery's event again (a new delivery, due at once). */
  async redeliver(webhookId: string, deliveryId: string): Promise<DeliveryInfo> {
    return this.api.json("POST", `/v1/webhooks/${segment(webhookId)}/deliveries/${segment(deliveryId)}/redeliver`);
  }

  /** The secret one-off callbacks (`callbackUrl`) are signed with. */
  async callbackSecret(): Promise<string> {
    return (await this.api.json<{ secret: string }>("GET", "/v1/webhooks/callback-secret")).secret;
  }
}

/** Headers as `fetch` (`Headers`) or Node's `IncomingHttpHeaders` give them. */
export type WebhookHeaders = Headers | Record<string, string | string[] | undefined>;

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (typeof (headers as Headers).get === "function") return (headers as Headers).get(name) ?? undefined;
  const record = headers as Record<string, string | string[] | undefined>;
  const value = record[name] ?? Object.entries(record).find(([k]) => k.toLowerCase() === name)?.[1];
  return Array.isArray(value) ? value[0] : value;
}

function timingSafeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/**
 * Checks a webhook or callback delivery: `wrenn-webhook-signature` must hold `v1=` + the hex
 * HMAC-SHA256, keyed with the secret, of `${wrenn-webhook-timestamp}.${body}` (the raw body, before
 * any JSON parsing), and the timestamp must be within `toleranceSec` (default 300) of now, so a
 * recorded delivery cannot be replayed later. Uses Web Crypto (Node, Bun, Deno, Workers).
 */
export async function verifyWebhookSignature(
  secret: string,
  headers: WebhookHeaders,
  body: string | Uint8Array,
  options: { toleranceSec?: number; now?: Date } = {},
): Promise<boolean> {
  const timestamp = header(headers, "wrenn-webhook-timestamp");
  const signatures = header(headers, "wrenn-webhook-signature");
  if (!timestamp || !signatures || !/^\d{1,12}$/.test(timestamp)) return false;
  const nowSec = Math.floor((options.now ?? new Date()).getTime() / 1000);
  if (Math.abs(nowSec - Number(timestamp)) > (options.toleranceSec ?? 300)) return false;
  const encoder = new TextEncoder();
  const bodyText = typeof body === "string" ? body : new TextDecoder().decode(body);
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(`${timestamp}.${bodyText}`)));
  const expected = `v1=${Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  // Several signatures (space-separated) may come while a secret is being rotated; one match is enough.
  return signatures.split(/[\s,]+/).some((s) => timingSafeEqual(s, expected));
}
