import type { App } from "../../context.js";
import { setHostStatus } from "../../services/hosts/drain.js";
import { statusRoute } from "./status-route.js";

const route = statusRoute("activate", "Let a drained host take new sandboxes again (admin)");

/** POST /v1/hosts/{id}/activate */
export const registerActivateHost = (app: App) =>
  app.openapi(route, async (c) => c.json(await setHostStatus(c.get("team"), c.req.valid("param").id, "active"), 200));
