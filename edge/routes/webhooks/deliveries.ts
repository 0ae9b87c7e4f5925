import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { listDeliveries, redeliver } from "../../services/webhooks/deliveries.js";
import { Delivery, DeliveryParams, ListDeliveriesQuery, WebhookIdParam } from "./schemas.js";

const listRoute = createRoute({
  method: "get",
  path: "/{id}/deliveries",
  tags: ["webhooks"],
  operationId: "listWebhookDeliveries",
  summary: "A webhook's delivery log, newest first: status, attempts, response codes and durations",
  ...scoped("sandboxes:read"),
  request: { params: WebhookIdParam, query: ListDeliveriesQuery },
  responses: {
    200: {
      description: "Deliveries",
      content: {
        "application/json": {
          schema: z.object({ deliveries: z.array(Delivery), nextCursor: z.string().optional() }),
        },
      },
    },
    ...openApiErrorResponses,
  },
});

const redeliverRoute = createRoute({
  method: "post",
  path: "/{id}/deliveries/{deliveryId}/redeliver",
  tags: ["webhooks"],
  operationId: "redeliverWebhookDelivery",
  summary: "Send a delivery's event again, as a new delivery due at once",
  ...scoped("sandboxes:write"),
  request: { params: DeliveryParams },
  responses: {
    202: { description: "The new delivery", content: { "application/json": { schema: Delivery } } },
    ...openApiErrorResponses,
  },
});

/** GET /v1/webhooks/{id}/deliveries */
export const registerListDeliveries = (app: App) =>
  app.openapi(listRoute, async (c) => {
    const q = c.req.valid("query");
    return c.json(
      await listDeliveries(c.get("team"), c.req.valid("param").id, {
        limit: q.limit,
        ...(q.cursor !== undefined ? { cursor: q.cursor } : {}),
        ...(q.status ? { status: q.status } : {}),
      }),
      200,
    );
  });

/** POST /v1/webhooks/{id}/deliveries/{deliveryId}/redeliver */
export const registerRedeliver = (app: App) =>
  app.openapi(redeliverRoute, async (c) => {
    const { id, deliveryId } = c.req.valid("param");
    return c.json(await redeliver(c.get("team"), id, deliveryId), 202);
  });
