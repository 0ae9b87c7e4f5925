import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { updateSandboxNetwork } from "../../services/sandboxes/network.js";
import { Sandbox, SandboxIdParam, UpdateNetworkBody } from "./schemas.js";

const route = createRoute({
  method: "put",
  path: "/{id}/network",
  tags: ["sandboxes"],
  operationId: "updateSandboxNetwork",
  summary: "Replace a sandbox's egress rules",
  description:
    "Replaces allowOut and denyOut whole (an omitted list is cleared) and optionally the internet switch, on a " +
    "running or paused sandbox. New connections follow the new rules within a second; see docs/egress.md.",
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: true, content: { "application/json": { schema: UpdateNetworkBody } } },
  },
  responses: {
    200: { description: "The sandbox with its new rules", content: { "application/json": { schema: Sandbox } } },
    ...openApiErrorResponses,
    ...openApiAgentErrorResponses,
  },
});

/** PUT /v1/sandboxes/{id}/network */
export const registerUpdateSandboxNetwork = (app: App) =>
  app.openapi(route, async (c) =>
    c.json(await updateSandboxNetwork(c.get("team"), c.req.valid("param").id, c.req.valid("json")), 200),
  );
