import { sql } from "drizzle-orm";
import { bigint, bigserial, boolean, index, integer, jsonb, pgTable, text, timestamp } from "drizzle-orm/pg-core";
import { lifecycleDates } from "./util.js";

/** Statuses of a webhook delivery: waiting for its (next) attempt, delivered, or given up on. */
export const webhookDeliveryStatuses = ["pending", "succeeded", "failed"] as const;
/** One of `webhookDeliveryStatuses`. */
export type WebhookDeliveryStatus = (typeof webhookDeliveryStatuses)[number];

/**
 * A team's webhook subscriptions. `secretSealed` is the signing secret encrypted with the edge's key
 * (the edge must read it back to sign). `eventTypes` empty means every event of the team; an entry may
 * end in `.*` (`sandbox.*`). A webhook made with an admin key (`operator`) also receives host events.
 */
export const webhooks = pgTable(
  "webhooks",
  {
    id: text("id").primaryKey(),
    teamId: text("team_id").notNull(),
    url: text("url").notNull(),
    description: text("description").notNull().default(""),
    eventTypes: jsonb("event_types").$type<string[]>().notNull().default([]),
    secretSealed: text("secret_sealed").notNull(),
    enabled: boolean("enabled").notNull().default(true),
    operator: boolean("operator").notNull().default(false),
    /** Deliveries in a row that ended in failure (every retry spent); reset by a success. */
    consecutiveFailures: integer("consecutive_failures").notNull().default(0),
    disabledAt: timestamp("disabled_at", { withTimezone: true, mode: "date" }),
    disabledReason: text("disabled_reason"),
    ...lifecycleDates,
  },
  (t) => [index("webhooks_team_idx").on(t.teamId)],
);

/**
 * The outbox and the delivery log in one: a row per (event, webhook), written in the event's
 * transaction, and a row per callback (`webhookId` null, `url` and `payload` set). The delivery loop
 * claims due rows (`leaseUntil`), so two edges never send the same attempt at once.
 */
export const webhookDeliveries = pgTable(
  "webhook_deliveries",
  {
    id: text("id").primaryKey().default(sql`'whd_' || replace(gen_random_uuid()::text, '-', '')`),
    webhookId: text("webhook_id"),
    teamId: text("team_id").notNull(),
    eventId: bigint("event_id", { mode: "number" }),
    eventType: text("event_type").notNull(),
    /** Callbacks only: where to send it (webhooks send to the webhook's current URL). */
    url: text("url"),
    /** Callbacks only: the body (webhooks send the event as `GET /v1/events` shows it). */
    payload: jsonb("payload").$type<Record<string, unknown>>(),
    status: text("status", { enum: webhookDeliveryStatuses }).notNull().default("pending"),
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: timestamp("next_attempt_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
    /** Set while one loop sends it; another loop takes it over only after this passes. */
    leaseUntil: timestamp("lease_until", { withTimezone: true, mode: "date" }),
    lastStatusCode: integer("last_status_code"),
    lastError: text("last_error"),
    lastDurationMs: integer("last_duration_ms"),
    deliveredAt: timestamp("delivered_at", { withTimezone: true, mode: "date" }),
    ...lifecycleDates,
  },
  (t) => [
    index("webhook_deliveries_due_idx").on(t.status, t.nextAttemptAt),
    index("webhook_deliveries_webhook_idx").on(t.webhookId, t.createdAt),
  ],
);

/** One HTTP attempt of a delivery: what the delivery log shows. */
export const webhookAttempts = pgTable(
  "webhook_attempts",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    deliveryId: text("delivery_id").notNull(),
    attempt: integer("attempt").notNull(),
    /** Whether the receiver answered 2xx. */
    ok: boolean("ok").notNull(),
    statusCode: integer("status_code"),
    error: text("error"),
    durationMs: integer("duration_ms").notNull(),
    startedAt: timestamp("started_at", { withTimezone: true, mode: "date" }).notNull(),
  },
  (t) => [index("webhook_attempts_delivery_idx").on(t.deliveryId, t.attempt)],
);

/** The secret a team's command-finished callbacks (no webhook row) are signed with; made on first use. */
export const teamCallbackSecrets = pgTable("team_callback_secrets", {
  teamId: text("team_id").primaryKey(),
  secretSealed: text("secret_sealed").notNull(),
  createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
});

/** A row of `webhooks`. */
export type WebhookRow = typeof webhooks.$inferSelect;
/** A row of `webhook_deliveries`. */
export type WebhookDeliveryRow = typeof webhookDeliveries.$inferSelect;
/** A row of `webhook_attempts`. */
export type WebhookAttemptRow = typeof webhookAttempts.$inferSelect;
