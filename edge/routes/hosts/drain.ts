import type { App } from "../../context.js";
import { setHostStatus } from "../../services/hosts/drain.js";
import { statusRoute } from "./status-route.js";

const route = statusRoute("drain", "Drain a host: no new sandboxes (admin)");

/** POST /v1/hosts/{id}/drain */
export const registerDrainHost = (app: App) =>
  app.openapi(route, async (c) => c.json(await setHostStatus(c.get("team"), c.req.valid("param").id, "draining"), 200));
