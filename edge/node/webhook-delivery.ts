import { lookup } from "node:dns/promises";
import type { Logger } from "../logger.js";
import type { ServiceContext } from "../services/context.js";
import { type DeliveryRunOptions, runWebhookDeliveries } from "../services/webhooks/deliver.js";
import { type DeliveryLoop, startDeliveryLoop } from "../services/webhooks/loop.js";

/** Every address a host name resolves to, so the SSRF guard sees a name that points inside. */
export async function resolveAllAddresses(hostname: string): Promise<string[]> {
  const found = await lookup(hostname, { all: true, verbatim: true });
  return found.map((a) => a.address);
}

/**
 * The Node edge's webhook delivery loop: every `intervalMs`, on a context of its own (never the
 * request that caused an event), sends the due deliveries. Host names are resolved first, so one that
 * resolves to a private address is refused like the address itself (unless private ones are allowed).
 */
export function startNodeWebhookDeliveries(options: {
  intervalMs: number;
  logger: Logger;
  context: () => ServiceContext;
  /** Told of every attempt (the edge's /metrics). */
  onAttempt?: DeliveryRunOptions["onAttempt"];
}): DeliveryLoop {
  return startDeliveryLoop({
    intervalMs: options.intervalMs,
    logger: options.logger,
    run: () =>
      runWebhookDeliveries(options.context(), {
        resolve: resolveAllAddresses,
        ...(options.onAttempt ? { onAttempt: options.onAttempt } : {}),
      }),
  });
}
