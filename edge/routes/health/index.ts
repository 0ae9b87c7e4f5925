import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { newRouter } from "../router.js";

const route = createRoute({
  method: "get",
  path: "/health",
  tags: ["meta"],
  operationId: "health",
  summary: "Liveness",
  responses: {
    200: {
      description: "Up",
      content: { "application/json": { schema: z.object({ status: z.literal("ok"), version: z.string() }) } },
    },
  },
});

/** GET /health (no key needed). */
export function healthRouter(version: string): App {
  const app = newRouter();
  app.openapi(route, (c) => c.json({ status: "ok" as const, version }, 200));
  return app;
}
