import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { listHosts } from "../../services/hosts/list.js";
import { Host } from "./schemas.js";

const listRoute = createRoute({
  method: "get",
  path: "/",
  tags: ["hosts"],
  operationId: "listHosts",
  summary: "List hosts (admin)",
  ...scoped("admin"),
  responses: {
    200: { description: "Hosts", content: { "application/json": { schema: z.object({ hosts: z.array(Host) }) } } },
    ...openApiErrorResponses,
  },
});

/** GET /v1/hosts */
export const registerListHosts = (app: App) =>
  app.openapi(listRoute, async (c) => c.json({ hosts: await listHosts(c.get("team")) }, 200));
