import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { startBackgroundCommand } from "../../services/commands/background.js";
import { BadRequestError } from "../../services/errors.js";
import { execCommand } from "../../services/sandboxes/exec.js";
import { ExecBody, ExecResult, SandboxIdParam } from "./schemas.js";

/** The exec body with the command history's background start (issue 22). */
const ExecOrBackgroundBody = ExecBody.extend({
  background: z
    .boolean()
    .optional()
    .openapi({
      description:
        "Answer 202 with a command id as soon as the command runs; it runs on after the call (no output in the " +
        "answer: read it from GET /v1/sandboxes/{id}/commands, the callback or a `command.finished` webhook). " +
        "`timeoutSec` does not apply.",
    }),
  callbackUrl: z
    .string()
    .max(2048)
    .optional()
    .openapi({
      description:
        "With `background`: where the edge POSTs the result (exit code, output head and tail, duration) once " +
        "the command ended, signed like a webhook with the team's callback secret.",
    }),
}).openapi("ExecCommandRequest");

const BackgroundStarted = z
  .object({
    commandId: z.string(),
    sandboxId: z.string(),
    pid: z.number().int(),
    callback: z.boolean().openapi({ description: "Whether a callback will be delivered when it ends" }),
  })
  .openapi("BackgroundCommand");

const route = createRoute({
  method: "post",
  path: "/{id}/exec",
  tags: ["sandboxes"],
  operationId: "execCommand",
  summary: "Run a command to completion, or start it in the background",
  description:
    "Without `args`, `cmd` runs under `/bin/bash -l -c`. Output that is not UTF-8 comes back base64 (`encoding`). " +
    "With `background: true` the answer is 202 with a command id as soon as the command runs.",
  ...scoped("sandboxes:exec"),
  request: {
    params: SandboxIdParam,
    body: { required: true, content: { "application/json": { schema: ExecOrBackgroundBody } } },
  },
  responses: {
    200: { description: "The command's output", content: { "application/json": { schema: ExecResult } } },
    202: {
      description: "The command runs in the background",
      content: { "application/json": { schema: BackgroundStarted } },
    },
    ...openApiErrorResponses,
    ...openApiAgentErrorResponses,
  },
});

/** Response of execCommand. */
export type ExecResponse = z.infer<typeof ExecResult>;

/** POST /v1/sandboxes/{id}/exec */
export const registerExec = (app: App) =>
  app.openapi(route, async (c) => {
    const { background, callbackUrl, ...input } = c.req.valid("json");
    const id = c.req.valid("param").id;
    if (background) return c.json(await startBackgroundCommand(c.get("team"), id, { ...input, callbackUrl }), 202);
    if (callbackUrl !== undefined) {
      throw new BadRequestError("callbackUrl needs background: true", { callbackUrl: "without background" });
    }
    // The service returns the answer's JSON as bytes (an ExecResult with up to 16 MiB per stream, not
    // built through one large string and JSON.stringify: issue 23). zod-openapi types a JSON answer
    // as c.json()'s; this one is the same document, already serialised.
    const json = await execCommand(c.get("team"), id, input);
    return c.body(json, 200, { "content-type": "application/json" }) as never;
  });
