import { createRoute, type z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { getSandbox } from "../../services/sandboxes/get.js";
import { Sandbox, SandboxIdParam } from "./schemas.js";

const route = createRoute({
  method: "get",
  path: "/{id}",
  tags: ["sandboxes"],
  operationId: "getSandbox",
  summary: "Get a sandbox",
  ...scoped("sandboxes:read"),
  request: { params: SandboxIdParam },
  responses: {
    200: { description: "The sandbox", content: { "application/json": { schema: Sandbox } } },
    ...openApiErrorResponses,
  },
});

/** Response of getSandbox. */
export type GetSandboxResponse = z.infer<typeof Sandbox>;

/** GET /v1/sandboxes/{id} */
export const registerGetSandbox = (app: App) =>
  app.openapi(route, async (c) => c.json(await getSandbox(c.get("team"), c.req.valid("param").id), 200));
