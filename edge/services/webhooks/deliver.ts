import { and, eq, inArray, sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import {
  events,
  type WebhookDeliveryRow,
  type WebhookRow,
  webhookAttempts,
  webhookDeliveries,
  webhooks,
} from "../../db/schema/index.js";
import type { ServiceContext } from "../context.js";
import { recordEvent } from "../events/record.js";
import { toEventView } from "../events/view.js";
import { rowsOf } from "../reconcile/apply.js";
import { nextAttemptAt } from "./backoff.js";
import { callbackSecretSealed, webhookSettingsOf } from "./manage.js";
import type { WebhookSettings } from "./settings.js";
import { deliveryHeaders } from "./signature.js";
import { refusedAddressReason, refusedHostReason } from "./url-policy.js";

/** Bytes of a receiver's answer that are read (and kept for the log) before the rest is dropped. */
export const maxResponseBytes = 4096;

/** Outcome of one attempt. */
interface AttemptResult {
  ok: boolean;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
}

/** What one run of the loop did. */
export interface DeliveryRunOutcome {
  claimed: number;
  succeeded: number;
  failed: number;
  gaveUp: number;
  disabledWebhooks: number;
}

/** Options of `runWebhookDeliveries`. */
export interface DeliveryRunOptions {
  /** Deliveries claimed per run. Default 50. */
  batch?: number;
  /** Attempts in flight at once. Default 8 (Workers: keep ≤ 5, see edge/worker.ts). */
  concurrency?: number;
  /** The fetch attempts use; default the global one. */
  fetch?: typeof fetch;
  /**
   * Resolves a host name to its addresses (Node: node:dns), so a name that points at a private
   * address is refused like the address itself; absent (Workers, whose fetch cannot reach private
   * addresses anyway): only literal addresses and known names are checked.
   */
  resolve?: (hostname: string) => Promise<string[]>;
  /** Randomness of the back-off jitter; tests pin it. */
  random?: () => number;
  /** Told of every attempt with its outcome and duration (the edge's /metrics, edge/middleware/metrics.ts). */
  onAttempt?: (outcome: "delivered" | "failed", seconds: number) => void;
}

/**
 * Claims the deliveries that are due: pending, their time come, and not held by another loop (or
 * held past their lease). `for update skip locked` keeps two edges' loops from claiming the same rows.
 */
async function claimDue(db: Database, settings: WebhookSettings, batch: number, now: Date) {
  const at = now.toISOString();
  const until = new Date(now.getTime() + settings.leaseMs).toISOString();
  const result = await db.execute(sql`
    update webhook_deliveries d set lease_until = ${until}::timestamptz
    where d.id in (
      select id from webhook_deliveries
      where status = 'pending' and next_attempt_at <= ${at}::timestamptz
        and (lease_until is null or lease_until < ${at}::timestamptz)
      order by next_attempt_at
      limit ${batch}
      for update skip locked
    )
    returning d.id`);
  const ids = rowsOf<{ id: string }>(result).map((r) => r.id);
  if (ids.length === 0) return [];
  return db.select().from(webhookDeliveries).where(inArray(webhookDeliveries.id, ids));
}

/** Reads at most `maxResponseBytes` of a body, then cancels the rest. */
async function drainBounded(response: Response): Promise<void> {
  const reader = response.body?.getReader();
  if (!reader) return;
  let read = 0;
  try {
    while (read < maxResponseBytes) {
      const { done, value } = await reader.read();
      if (done) return;
      read += value.byteLength;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    if (err.name === "TimeoutError" || err.name === "AbortError") return "timed out";
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    return cause?.code ? `${err.message} (${cause.code})` : err.message;
  }
  return String(err);
}

/** Sends one attempt: no redirects followed, a deadline on the whole exchange, a bounded read. */
async function send(
  url: string,
  headers: Record<string, string>,
  body: string,
  settings: WebhookSettings,
  options: DeliveryRunOptions,
): Promise<AttemptResult> {
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  if (!settings.allowPrivate) {
    const host = new URL(url).hostname;
    const literal = refusedHostReason(host);
    if (literal) return { ok: false, statusCode: null, error: `refused: ${host} is ${literal}`, durationMs: 0 };
    if (options.resolve && !host.startsWith("[") && !/^\d+\.\d+\.\d+\.\d+$/.test(host)) {
      try {
        const addresses = await options.resolve(host);
        const bad = addresses.find((a) => refusedAddressReason(a));
        if (bad) {
          const reason = refusedAddressReason(bad);
          return {
            ok: false,
            statusCode: null,
            error: `refused: ${host} resolves to ${bad} (${reason})`,
            durationMs: elapsed(),
          };
        }
      } catch (err) {
        return { ok: false, statusCode: null, error: `resolving ${host}: ${describe(err)}`, durationMs: elapsed() };
      }
    }
  }
  const signal = AbortSignal.timeout(settings.timeoutMs);
  try {
    const response = await (options.fetch ?? fetch)(url, { method: "POST", headers, body, redirect: "manual", signal });
    await drainBounded(response);
    const ok = response.status >= 200 && response.status < 300;
    return {
      ok,
      statusCode: response.status,
      error: ok ? null : response.status >= 300 && response.status < 400 ? "redirect not followed" : null,
      durationMs: elapsed(),
    };
  } catch (err) {
    return { ok: false, statusCode: null, error: describe(err), durationMs: elapsed() };
  }
}

/** What a delivery sends: the body, where, signed with which secret (sealed). */
interface Prepared {
  url: string;
  body: string;
  secretSealed: string;
  webhook?: WebhookRow;
}

/** Works out a claimed delivery's request, or why it cannot go (webhook deleted or disabled, event gone). */
async function prepare(ctx: ServiceContext, delivery: WebhookDeliveryRow): Promise<Prepared | { giveUp: string }> {
  if (delivery.webhookId === null) {
    if (!delivery.url || !delivery.payload) return { giveUp: "callback without URL or payload" };
    return {
      url: delivery.url,
      body: JSON.stringify(delivery.payload),
      secretSealed: await callbackSecretSealed(ctx.db, ctx, delivery.teamId),
    };
  }
  const [webhook] = await ctx.db.select().from(webhooks).where(eq(webhooks.id, delivery.webhookId));
  if (!webhook) return { giveUp: "webhook deleted" };
  if (!webhook.enabled) return { giveUp: "webhook disabled" };
  if (delivery.eventId === null) return { giveUp: "delivery without event" };
  const [event] = await ctx.db.select().from(events).where(eq(events.id, delivery.eventId));
  if (!event) return { giveUp: "event no longer stored" };
  return { url: webhook.url, body: JSON.stringify(toEventView(event)), secretSealed: webhook.secretSealed, webhook };
}

/**
 * Records an attempt and moves the delivery on, in one transaction: a success settles it and resets
 * the webhook's failure count; a failure schedules the next attempt (or gives up past the retry
 * window) and counts against the webhook, which is disabled — with a `webhook.disabled` event — once
 * `disableAfter` attempts in a row have failed.
 */
async function settle(
  ctx: ServiceContext,
  delivery: WebhookDeliveryRow,
  attempt: number,
  result: AttemptResult,
  startedAt: Date,
  webhook: WebhookRow | undefined,
  options: DeliveryRunOptions,
): Promise<{ gaveUp: boolean; disabled: boolean }> {
  const settings = webhookSettingsOf(ctx);
  const now = ctx.now();
  return ctx.db.transaction(async (tx) => {
    await tx.insert(webhookAttempts).values({
      deliveryId: delivery.id,
      attempt,
      ok: result.ok,
      statusCode: result.statusCode,
      error: result.error,
      durationMs: result.durationMs,
      startedAt,
    });
    const next = result.ok ? null : nextAttemptAt(delivery.createdAt, attempt, now, settings, options.random);
    await tx
      .update(webhookDeliveries)
      .set({
        attempts: attempt,
        status: result.ok ? "succeeded" : next ? "pending" : "failed",
        ...(next ? { nextAttemptAt: next } : {}),
        leaseUntil: null,
        lastStatusCode: result.statusCode,
        lastError: result.error,
        lastDurationMs: result.durationMs,
        ...(result.ok ? { deliveredAt: now } : {}),
        updatedAt: now,
      })
      .where(eq(webhookDeliveries.id, delivery.id));
    if (!webhook) return { gaveUp: !result.ok && !next, disabled: false };
    if (result.ok) {
      await tx.update(webhooks).set({ consecutiveFailures: 0 }).where(eq(webhooks.id, webhook.id));
      return { gaveUp: false, disabled: false };
    }
    const [counted] = await tx
      .update(webhooks)
      .set({ consecutiveFailures: sql`${webhooks.consecutiveFailures} + 1` })
      .where(eq(webhooks.id, webhook.id))
      .returning({ failures: webhooks.consecutiveFailures, enabled: webhooks.enabled });
    let disabled = false;
    if (counted?.enabled && counted.failures >= settings.disableAfter) {
      const reason = `${counted.failures} delivery attempts in a row failed (last: ${result.error ?? `HTTP ${result.statusCode}`})`;
      const [off] = await tx
        .update(webhooks)
        .set({ enabled: false, disabledAt: now, disabledReason: reason, updatedAt: now })
        .where(and(eq(webhooks.id, webhook.id), eq(webhooks.enabled, true)))
        .returning({ id: webhooks.id });
      if (off) {
        disabled = true;
        await recordEvent(tx, {
          teamId: webhook.teamId,
          type: "webhook.disabled",
          actor: "edge",
          data: { webhookId: webhook.id, url: webhook.url, reason, consecutiveFailures: counted.failures },
        });
      }
    }
    return { gaveUp: !next, disabled };
  });
}

/** Settles a delivery that cannot be sent at all (its webhook was deleted or disabled). */
async function giveUp(ctx: ServiceContext, delivery: WebhookDeliveryRow, why: string): Promise<void> {
  await ctx.db
    .update(webhookDeliveries)
    .set({ status: "failed", leaseUntil: null, lastError: why, updatedAt: ctx.now() })
    .where(eq(webhookDeliveries.id, delivery.id));
}

async function inParallel<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await work(item);
    }
  });
  await Promise.all(runners);
}

/**
 * One run of the delivery loop (Node: every WRENN_WEBHOOK_INTERVAL_MS; Workers: each cron event):
 * claims the due deliveries and sends each once. Deliveries live in the database, so whatever an edge
 * restart interrupts is sent by the next run of any edge (at least once: an attempt the receiver got
 * but whose outcome was not recorded goes again — receivers drop duplicates by `wrenn-webhook-id`).
 */
export async function runWebhookDeliveries(
  ctx: ServiceContext,
  options: DeliveryRunOptions = {},
): Promise<DeliveryRunOutcome> {
  const settings = webhookSettingsOf(ctx);
  const outcome: DeliveryRunOutcome = { claimed: 0, succeeded: 0, failed: 0, gaveUp: 0, disabledWebhooks: 0 };
  const claimed = await claimDue(ctx.db, settings, options.batch ?? 50, ctx.now());
  outcome.claimed = claimed.length;
  await inParallel(claimed, options.concurrency ?? 8, async (delivery) => {
    try {
      const prepared = await prepare(ctx, delivery);
      if ("giveUp" in prepared) {
        await giveUp(ctx, delivery, prepared.giveUp);
        outcome.gaveUp++;
        return;
      }
      const attempt = delivery.attempts + 1;
      const startedAt = ctx.now();
      const headers = await deliveryHeaders({
        secret: await ctx.secrets.open(prepared.secretSealed),
        deliveryId: delivery.id,
        eventType: delivery.eventType,
        attempt,
        body: prepared.body,
        now: startedAt,
      });
      const result = await send(prepared.url, headers, prepared.body, settings, options);
      options.onAttempt?.(result.ok ? "delivered" : "failed", result.durationMs / 1000);
      const settled = await settle(ctx, delivery, attempt, result, startedAt, prepared.webhook, options);
      if (result.ok) outcome.succeeded++;
      else outcome.failed++;
      if (settled.gaveUp) outcome.gaveUp++;
      if (settled.disabled) outcome.disabledWebhooks++;
      if (!result.ok) {
        ctx.logger.info("webhook attempt failed", {
          deliveryId: delivery.id,
          attempt,
          statusCode: result.statusCode,
          error: result.error,
        });
      }
    } catch (err) {
      // The lease runs out and a later run tries again.
      ctx.logger.warn("webhook delivery failed to run", { deliveryId: delivery.id, err });
    }
  });
  return outcome;
}
