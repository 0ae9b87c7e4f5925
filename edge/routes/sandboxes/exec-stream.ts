import { createRoute, z } from "@hono/zod-openapi";
import { streamSSE } from "hono/streaming";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { execStream } from "../../services/sandboxes/exec-stream.js";
import { ExecBody, SandboxIdParam } from "./schemas.js";

const route = createRoute({
  method: "post",
  path: "/{id}/exec/stream",
  tags: ["sandboxes"],
  operationId: "execCommandStream",
  summary: "Run a command and stream its output (Server-Sent Events)",
  description:
    "Events: `start` {pid}, `stdout`/`stderr` {data, encoding}, `exit` {exitCode, error?}, `error` {code, message}. " +
    "Each event's data is JSON. Closing the connection kills the command.",
  ...scoped("sandboxes:exec"),
  request: { params: SandboxIdParam, body: { required: true, content: { "application/json": { schema: ExecBody } } } },
  responses: {
    200: { description: "An event stream", content: { "text/event-stream": { schema: z.string() } } },
    ...openApiErrorResponses,
    ...openApiAgentErrorResponses,
  },
});

/** POST /v1/sandboxes/{id}/exec/stream */
export const registerExecStream = (app: App) =>
  app.openapi(route, async (c) => {
    const abort = new AbortController();
    const events = await execStream(c.get("team"), c.req.valid("param").id, c.req.valid("json"), abort.signal);
    return streamSSE(c, async (sse) => {
      sse.onAbort(() => abort.abort());
      for await (const event of events) {
        const { type, ...data } = event;
        await sse.writeSSE({ event: type, data: JSON.stringify(data) });
      }
    });
  });
