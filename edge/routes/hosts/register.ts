import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { registerHost } from "../../services/hosts/register.js";
import { Host, RegisterHostBody } from "./schemas.js";

const route = createRoute({
  method: "post",
  path: "/",
  tags: ["hosts"],
  operationId: "registerHost",
  summary: "Register a host agent (admin)",
  description:
    "The edge calls the agent's GetHostInfo with the token first; an unreachable agent answers 503. " +
    "Registering a known address again updates its token and facts (200).",
  ...scoped("admin"),
  request: { body: { required: true, content: { "application/json": { schema: RegisterHostBody } } } },
  responses: {
    201: { description: "Registered", content: { "application/json": { schema: Host } } },
    200: {
      description: "Already registered; token and facts updated",
      content: { "application/json": { schema: Host } },
    },
    ...openApiErrorResponses,
    ...openApiAgentErrorResponses,
  },
});

/** POST /v1/hosts */
export const registerRegisterHost = (app: App) =>
  app.openapi(route, async (c) => {
    const { host, created } = await registerHost(c.get("team"), c.req.valid("json"));
    return created ? c.json(host, 201) : c.json(host, 200);
  });
