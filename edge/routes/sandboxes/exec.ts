import { createRoute, type z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { execCommand } from "../../services/sandboxes/exec.js";
import { ExecBody, ExecResult, SandboxIdParam } from "./schemas.js";

const route = createRoute({
  method: "post",
  path: "/{id}/exec",
  tags: ["sandboxes"],
  operationId: "execCommand",
  summary: "Run a command to completion",
  description:
    "Without `args`, `cmd` runs under `/bin/bash -l -c`. Output that is not UTF-8 comes back base64 (`encoding`).",
  ...scoped("sandboxes:exec"),
  request: { params: SandboxIdParam, body: { required: true, content: { "application/json": { schema: ExecBody } } } },
  responses: {
    200: { description: "The command's output", content: { "application/json": { schema: ExecResult } } },
    ...openApiErrorResponses,
    ...openApiAgentErrorResponses,
  },
});

/** Response of execCommand. */
export type ExecResponse = z.infer<typeof ExecResult>;

/** POST /v1/sandboxes/{id}/exec */
export const registerExec = (app: App) =>
  app.openapi(route, async (c) =>
    c.json(await execCommand(c.get("team"), c.req.valid("param").id, c.req.valid("json")), 200),
  );
