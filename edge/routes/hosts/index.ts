import type { App } from "../../context.js";
import { requireAdmin } from "../../middleware/auth.js";
import { newRouter } from "../router.js";
import { registerActivateHost } from "./activate.js";
import { registerDeleteHost } from "./delete.js";
import { registerDrainHost } from "./drain.js";
import { registerListHosts } from "./list.js";
import { registerRegisterHost } from "./register.js";

/** The /v1/hosts router; every route needs an admin key. */
export function hostsRouter(): App {
  const app = newRouter();
  app.use("*", requireAdmin());
  registerRegisterHost(app);
  registerListHosts(app);
  registerDrainHost(app);
  registerActivateHost(app);
  registerDeleteHost(app);
  return app;
}
