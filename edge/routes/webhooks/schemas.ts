import { z } from "@hono/zod-openapi";
import { eventTypes } from "../../services/events/types.js";
import { webhookDeliveryStatuses } from "../../services/webhooks/deliveries.js";

const id = (name: string, example: string) =>
  z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name, in: "path" }, example });

/** Path parameter of /v1/webhooks/{id}. */
export const WebhookIdParam = z.object({ id: id("id", "wh_0123456789abcdef") });
/** Path parameters of /v1/webhooks/{id}/deliveries/{deliveryId}. */
export const DeliveryParams = z.object({
  id: id("id", "wh_0123456789abcdef"),
  deliveryId: id("deliveryId", "whd_0123456789abcdef0123456789abcdef"),
});

/** A webhook (never with its secret). */
export const Webhook = z
  .object({
    id: z.string(),
    url: z.string(),
    description: z.string(),
    eventTypes: z.array(z.string()).openapi({ description: "Empty: every event of the team" }),
    enabled: z.boolean(),
    operator: z.boolean().openapi({ description: "Made with an admin key: also receives host events" }),
    consecutiveFailures: z.number().int(),
    disabledAt: z.string().nullable(),
    disabledReason: z.string().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi("Webhook");

/** A new webhook with its secret (shown once). */
export const CreatedWebhook = Webhook.extend({
  secret: z.string().openapi({ description: "Signing secret, shown this once", example: "whsec_…" }),
}).openapi("CreatedWebhook");

const eventTypesField = z
  .array(z.string().min(1).max(64))
  .max(eventTypes.length)
  .openapi({
    description: `Event types to receive (a type, or a prefix such as \`sandbox.*\`); empty or absent: all. Known: ${eventTypes.join(", ")}`,
  });

/** Body of POST /v1/webhooks. */
export const CreateWebhookBody = z
  .object({
    url: z.string().min(1).max(2048).openapi({ example: "https://example.com/wrenn-hooks" }),
    eventTypes: eventTypesField.optional(),
    description: z.string().max(500).optional(),
    enabled: z.boolean().optional(),
  })
  .strict()
  .openapi("CreateWebhookBody");

/** Body of PATCH /v1/webhooks/{id}. */
export const UpdateWebhookBody = CreateWebhookBody.partial().strict().openapi("UpdateWebhookBody");

/** One attempt of a delivery. */
export const DeliveryAttempt = z.object({
  attempt: z.number().int(),
  ok: z.boolean(),
  statusCode: z.number().int().nullable(),
  error: z.string().nullable(),
  durationMs: z.number().int(),
  startedAt: z.string(),
});

/** A delivery and its attempts. */
export const Delivery = z
  .object({
    id: z.string(),
    webhookId: z.string().nullable(),
    eventId: z.string().nullable(),
    eventType: z.string(),
    status: z.enum(webhookDeliveryStatuses),
    attempts: z.number().int(),
    nextAttemptAt: z.string().nullable(),
    lastStatusCode: z.number().int().nullable(),
    lastError: z.string().nullable(),
    lastDurationMs: z.number().int().nullable(),
    deliveredAt: z.string().nullable(),
    createdAt: z.string(),
    log: z.array(DeliveryAttempt),
  })
  .openapi("WebhookDelivery");

/** Query of GET /v1/webhooks/{id}/deliveries. */
export const ListDeliveriesQuery = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().max(40).optional(),
  status: z.enum(webhookDeliveryStatuses).optional(),
});
