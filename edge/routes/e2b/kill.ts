import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { e2bState } from "../../services/e2b/mapping.js";
import { NotFoundError } from "../../services/errors.js";
import { destroySandbox } from "../../services/sandboxes/destroy.js";
import { getSandbox } from "../../services/sandboxes/get.js";
import { e2bErrorResponses } from "./errors.js";
import { SandboxIdParam } from "./schemas.js";

const route = createRoute({
  method: "delete",
  path: "/sandboxes/{sandboxID}",
  tags: ["e2b"],
  operationId: "e2bKillSandbox",
  summary: "Kill a running or paused sandbox (E2B)",
  description: "A sandbox that is already gone answers 404, which the SDK's `kill` reports as `false`.",
  ...scoped("sandboxes:write"),
  request: { params: SandboxIdParam },
  responses: { 204: { description: "Killed" }, ...e2bErrorResponses },
});

/** DELETE /sandboxes/{sandboxID} */
export const registerE2bKillSandbox = (app: App) =>
  app.openapi(route, async (c) => {
    const team = c.get("team");
    const { sandboxID } = c.req.valid("param");
    const sandbox = await getSandbox(team, sandboxID);
    if (e2bState(sandbox.state) === undefined && sandbox.state !== "pending") {
      throw new NotFoundError("sandbox", sandboxID);
    }
    await destroySandbox(team, sandboxID);
    return c.body(null, 204);
  });
