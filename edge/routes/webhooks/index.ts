import type { App } from "../../context.js";
import { newRouter } from "../router.js";
import { registerCallbackSecret } from "./callback-secret.js";
import { registerCreateWebhook } from "./create.js";
import { registerDeleteWebhook } from "./delete.js";
import { registerListDeliveries, registerRedeliver } from "./deliveries.js";
import { registerGetWebhook, registerListWebhooks } from "./list.js";
import { registerUpdateWebhook } from "./update.js";

/** The /v1/webhooks router. `callback-secret` comes before `/{id}` so it is not read as an id. */
export function webhooksRouter(): App {
  const app = newRouter();
  registerCallbackSecret(app);
  registerCreateWebhook(app);
  registerListWebhooks(app);
  registerGetWebhook(app);
  registerUpdateWebhook(app);
  registerDeleteWebhook(app);
  registerListDeliveries(app);
  registerRedeliver(app);
  return app;
}
