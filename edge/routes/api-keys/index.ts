import type { App } from "../../context.js";
import { newRouter } from "../router.js";
import { registerCreateApiKey } from "./create.js";
import { registerListApiKeys } from "./list.js";
import { registerRevokeApiKey } from "./revoke.js";
import { registerUpdateApiKey } from "./update.js";

/** The /v1/api-keys router. */
export function apiKeysRouter(): App {
  const app = newRouter();
  registerCreateApiKey(app);
  registerListApiKeys(app);
  registerRevokeApiKey(app);
  registerUpdateApiKey(app);
  return app;
}
