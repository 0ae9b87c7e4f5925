import type { App } from "../../context.js";
import { newRouter } from "../router.js";
import { registerListAudit } from "./list.js";

/** The /v1/audit router. */
export function auditRouter(): App {
  const app = newRouter();
  registerListAudit(app);
  return app;
}
