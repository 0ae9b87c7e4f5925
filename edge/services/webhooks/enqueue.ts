import type { Database } from "../../db/client.js";
import { webhookDeliveries } from "../../db/schema/index.js";
import { randomString } from "../ids.js";

/** What a one-off callback carries: the event's type, the sandbox it is about and its data. */
export interface CallbackEvent {
  /** e.g. `command.finished`. */
  type: string;
  sandboxId?: string | null;
  data: Record<string, unknown>;
}

/** A queued callback: the delivery's id (as `GET /v1/webhooks/callbacks/deliveries` shows it) and the body's id. */
export interface QueuedCallback {
  deliveryId: string;
  callbackId: string;
}

/**
 * Queues a one-off signed delivery of `event` to `url`, in `tx` (call it inside the transaction that
 * records what the callback reports, so it is sent exactly when that is committed, even across an
 * edge restart). It is sent by the delivery loop with the same retries, headers and log as webhook
 * deliveries, signed with the team's callback secret (`GET /v1/webhooks/callback-secret`, made on
 * first use). Check the URL first with `checkWebhookUrl` (edge/services/webhooks/url-policy.ts) and
 * answer 400 to a refused one; the loop checks it again before every attempt.
 */
export async function enqueueCallback(
  tx: Database,
  callback: { teamId: string; url: string; event: CallbackEvent },
): Promise<QueuedCallback> {
  const callbackId = `cb_${randomString(20, "abcdefghijklmnopqrstuvwxyz0123456789")}`;
  const payload = {
    id: callbackId,
    type: callback.event.type,
    teamId: callback.teamId,
    sandboxId: callback.event.sandboxId ?? null,
    createdAt: new Date().toISOString(),
    data: callback.event.data,
  };
  const [row] = await tx
    .insert(webhookDeliveries)
    .values({ teamId: callback.teamId, eventType: callback.event.type, url: callback.url, payload })
    .returning({ id: webhookDeliveries.id });
  if (!row) throw new Error("insert into webhook_deliveries returned no row");
  return { deliveryId: row.id, callbackId };
}
