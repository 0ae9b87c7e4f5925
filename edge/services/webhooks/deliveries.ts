import { and, asc, desc, eq, inArray, lt } from "drizzle-orm";
import {
  type WebhookAttemptRow,
  type WebhookDeliveryRow,
  webhookAttempts,
  webhookDeliveries,
} from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { BadRequestError, NotFoundError } from "../errors.js";
import { eventIdOf } from "../events/view.js";
import { loadWebhook } from "./manage.js";

/** One attempt in the delivery log. */
export interface AttemptView {
  attempt: number;
  ok: boolean;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
  startedAt: string;
}

/** A delivery and its attempts. */
export interface DeliveryView {
  id: string;
  webhookId: string | null;
  eventId: string | null;
  eventType: string;
  status: WebhookDeliveryRow["status"];
  attempts: number;
  nextAttemptAt: string | null;
  lastStatusCode: number | null;
  lastError: string | null;
  lastDurationMs: number | null;
  deliveredAt: string | null;
  createdAt: string;
  log: AttemptView[];
}

function toDeliveryView(row: WebhookDeliveryRow, attempts: WebhookAttemptRow[]): DeliveryView {
  return {
    id: row.id,
    webhookId: row.webhookId,
    eventId: row.eventId === null ? null : eventIdOf(row.eventId),
    eventType: row.eventType,
    status: row.status,
    attempts: row.attempts,
    nextAttemptAt: row.status === "pending" ? row.nextAttemptAt.toISOString() : null,
    lastStatusCode: row.lastStatusCode,
    lastError: row.lastError,
    lastDurationMs: row.lastDurationMs,
    deliveredAt: row.deliveredAt?.toISOString() ?? null,
    createdAt: row.createdAt.toISOString(),
    log: attempts.map((a) => ({
      attempt: a.attempt,
      ok: a.ok,
      statusCode: a.statusCode,
      error: a.error,
      durationMs: a.durationMs,
      startedAt: a.startedAt.toISOString(),
    })),
  };
}

/** The deliveries of a webhook (callbacks: `webhookId` "callbacks"), newest first, with their attempts. */
export async function listDeliveries(
  ctx: TeamContext,
  webhookId: string,
  page: { limit: number; cursor?: string; status?: WebhookDeliveryRow["status"] },
): Promise<{ deliveries: DeliveryView[]; nextCursor?: string }> {
  await loadWebhook(ctx, webhookId);
  let before: Date | undefined;
  if (page.cursor !== undefined) {
    before = new Date(page.cursor);
    if (Number.isNaN(before.getTime())) throw new BadRequestError("cursor must be a time from nextCursor");
  }
  const rows = await ctx.db
    .select()
    .from(webhookDeliveries)
    .where(
      and(
        eq(webhookDeliveries.webhookId, webhookId),
        eq(webhookDeliveries.teamId, ctx.principal.teamId),
        page.status ? eq(webhookDeliveries.status, page.status) : undefined,
        before ? lt(webhookDeliveries.createdAt, before) : undefined,
      ),
    )
    .orderBy(desc(webhookDeliveries.createdAt), desc(webhookDeliveries.id))
    .limit(page.limit + 1);
  const shown = rows.slice(0, page.limit);
  const attempts =
    shown.length === 0
      ? []
      : await ctx.db
          .select()
          .from(webhookAttempts)
          .where(
            inArray(
              webhookAttempts.deliveryId,
              shown.map((d) => d.id),
            ),
          )
          .orderBy(asc(webhookAttempts.attempt), asc(webhookAttempts.id));
  const byDelivery = new Map<string, WebhookAttemptRow[]>();
  for (const a of attempts) byDelivery.set(a.deliveryId, [...(byDelivery.get(a.deliveryId) ?? []), a]);
  const last = shown.at(-1);
  return {
    deliveries: shown.map((d) => toDeliveryView(d, byDelivery.get(d.id) ?? [])),
    ...(rows.length > page.limit && last ? { nextCursor: last.createdAt.toISOString() } : {}),
  };
}

/**
 * Sends a delivery's event again: a new delivery of the same event to the webhook (its own attempts
 * and 24-hour retry window), due at once. The webhook must be enabled.
 */
export async function redeliver(ctx: TeamContext, webhookId: string, deliveryId: string): Promise<DeliveryView> {
  const webhook = await loadWebhook(ctx, webhookId);
  const [original] = await ctx.db
    .select()
    .from(webhookDeliveries)
    .where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.webhookId, webhook.id)))
    .limit(1);
  if (!original) throw new NotFoundError("delivery", deliveryId);
  if (!webhook.enabled) throw new BadRequestError(`webhook ${webhook.id} is disabled; enable it first`);
  const now = ctx.now();
  const [row] = await ctx.db
    .insert(webhookDeliveries)
    .values({
      webhookId: webhook.id,
      teamId: webhook.teamId,
      eventId: original.eventId,
      eventType: original.eventType,
      nextAttemptAt: now,
      createdAt: now,
      updatedAt: now,
    })
    .returning();
  if (!row) throw new Error("insert into webhook_deliveries returned no row");
  ctx.logger.info("webhook redelivery queued", { webhookId, deliveryId, redeliveryId: row.id });
  return toDeliveryView(row, []);
}

/** Statuses of a delivery, for the routes' schemas (routes do not import the database schema). */
export { webhookDeliveryStatuses } from "../../db/schema/index.js";
