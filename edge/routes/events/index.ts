import type { App } from "../../context.js";
import { newRouter } from "../router.js";
import { registerListEvents } from "./list.js";
import { registerStreamEvents } from "./stream.js";

/** The /v1/events router. */
export function eventsRouter(): App {
  const app = newRouter();
  registerListEvents(app);
  registerStreamEvents(app);
  return app;
}
