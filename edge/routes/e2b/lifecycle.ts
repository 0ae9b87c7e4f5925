import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { checkTimeout } from "../../services/e2b/create-input.js";
import { e2bState } from "../../services/e2b/mapping.js";
import { ConflictError, NotFoundError } from "../../services/errors.js";
import { getSandbox } from "../../services/sandboxes/get.js";
import { pauseSandbox } from "../../services/sandboxes/pause.js";
import { setSandboxTimeout } from "../../services/sandboxes/set-timeout.js";
import type { SandboxView } from "../../services/sandboxes/view.js";
import { E2bError, e2bErrorResponses } from "./errors.js";
import { PauseBody, SandboxIdParam, TimeoutBody } from "./schemas.js";

const timeoutRoute = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/timeout",
  tags: ["e2b"],
  operationId: "e2bSetSandboxTimeout",
  summary: "Set a sandbox's timeout to `timeout` seconds from now (E2B)",
  description: "May shorten or extend it. On a paused sandbox it applies from the resume.",
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: true, content: { "application/json": { schema: TimeoutBody } } },
  },
  responses: { 204: { description: "Set" }, ...e2bErrorResponses },
});

const pauseRoute = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/pause",
  tags: ["e2b"],
  operationId: "e2bPauseSandbox",
  summary: "Pause a running sandbox (E2B)",
  description:
    "409 when it is already paused (the SDK's `pause` then returns false). `memory: false` keeps only the files: the processes end and resume boots the sandbox afresh.",
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: false, content: { "application/json": { schema: PauseBody } } },
  },
  responses: {
    204: { description: "Paused" },
    409: { description: "Already paused, or changing state", content: { "application/json": { schema: E2bError } } },
    ...e2bErrorResponses,
  },
});

/** A sandbox that is live in E2B's sense (running or paused); killed ones are not found. */
async function liveSandbox(team: Parameters<typeof getSandbox>[0], sandboxId: string): Promise<SandboxView> {
  const sandbox = await getSandbox(team, sandboxId);
  if (e2bState(sandbox.state) === undefined) throw new NotFoundError("sandbox", sandboxId);
  return sandbox;
}

/** POST /sandboxes/{sandboxID}/timeout and POST /sandboxes/{sandboxID}/pause */
export const registerE2bLifecycle = (app: App) => {
  app.openapi(timeoutRoute, async (c) => {
    const team = c.get("team");
    const { sandboxID } = c.req.valid("param");
    const timeoutSec = checkTimeout(c.req.valid("json").timeout);
    await liveSandbox(team, sandboxID);
    await setSandboxTimeout(team, sandboxID, { timeoutSec });
    return c.body(null, 204);
  });
  app.openapi(pauseRoute, async (c) => {
    const team = c.get("team");
    const { sandboxID } = c.req.valid("param");
    const sandbox = await liveSandbox(team, sandboxID);
    if (e2bState(sandbox.state) === "paused") throw new ConflictError(`Sandbox ${sandboxID} is already paused`);
    const body = c.req.valid("json") as { memory?: boolean } | undefined;
    await pauseSandbox(team, sandboxID, { keepMemory: body?.memory ?? true });
    return c.body(null, 204);
  });
};
