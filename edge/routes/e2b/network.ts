import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { networkUpdateFromE2b } from "../../services/e2b/create-input.js";
import { updateE2bSandboxNetwork } from "../../services/e2b/network.js";
import { e2bErrorResponses } from "./errors.js";
import { E2bNetworkUpdate, SandboxIdParam } from "./schemas.js";

const route = createRoute({
  method: "put",
  path: "/sandboxes/{sandboxID}/network",
  tags: ["e2b"],
  operationId: "e2bUpdateSandboxNetwork",
  summary: "Replace a sandbox's egress rules (E2B)",
  description:
    "SandboxNetworkUpdateConfig: allowOut and denyOut replace the current rules (an omitted list is cleared); " +
    "allow_internet_access, when given, sets the internet switch. New connections follow within a second.",
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: true, content: { "application/json": { schema: E2bNetworkUpdate } } },
  },
  responses: { 204: { description: "Updated" }, ...e2bErrorResponses },
});

/** PUT /sandboxes/{sandboxID}/network */
export const registerE2bUpdateSandboxNetwork = (app: App) =>
  app.openapi(route, async (c) => {
    const input = networkUpdateFromE2b(c.req.valid("json"));
    await updateE2bSandboxNetwork(c.get("team"), c.req.valid("param").sandboxID, input);
    return c.body(null, 204);
  });
