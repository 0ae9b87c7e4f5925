import { createRoute, type z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { createSandbox } from "../../services/sandboxes/create.js";
import { CreatedSandbox, CreateSandboxBody } from "./schemas.js";

const route = createRoute({
  method: "post",
  path: "/",
  tags: ["sandboxes"],
  operationId: "createSandbox",
  summary: "Create a sandbox",
  ...scoped("sandboxes:write"),
  request: { body: { content: { "application/json": { schema: CreateSandboxBody } } } },
  responses: {
    201: { description: "The sandbox, running", content: { "application/json": { schema: CreatedSandbox } } },
    ...openApiErrorResponses,
    ...openApiAgentErrorResponses,
  },
});

/** Response of createSandbox. */
export type CreateSandboxResponse = z.infer<typeof CreatedSandbox>;

/** POST /v1/sandboxes */
export const registerCreateSandbox = (app: App) =>
  app.openapi(route, async (c) => {
    const created = await createSandbox(c.get("team"), c.req.valid("json"));
    return c.json({ ...created.sandbox, envdAccessToken: created.envdAccessToken }, 201);
  });
