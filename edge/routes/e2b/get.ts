import { createRoute, type z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { describeSandbox } from "../../services/e2b/describe.js";
import { e2bErrorResponses } from "./errors.js";
import { E2bSandboxDetail, SandboxIdParam } from "./schemas.js";
import { sandboxDomain, toE2bDetail } from "./shape.js";

const route = createRoute({
  method: "get",
  path: "/sandboxes/{sandboxID}",
  tags: ["e2b"],
  operationId: "e2bGetSandbox",
  summary: "Get a running or paused sandbox (E2B)",
  ...scoped("sandboxes:read"),
  request: { params: SandboxIdParam },
  responses: {
    200: { description: "The sandbox", content: { "application/json": { schema: E2bSandboxDetail } } },
    ...e2bErrorResponses,
  },
});

/** Response of GET /sandboxes/{sandboxID}. */
export type E2bGetSandboxResponse = z.infer<typeof E2bSandboxDetail>;

/** GET /sandboxes/{sandboxID} */
export const registerE2bGetSandbox = (app: App) =>
  app.openapi(route, async (c) => {
    const team = c.get("team");
    const described = await describeSandbox(team, c.req.valid("param").sandboxID);
    return c.json(toE2bDetail(described, sandboxDomain(c), team.now()), 200);
  });
