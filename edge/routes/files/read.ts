import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { markRelayed } from "../../proxy/relayed.js";
import { readFile } from "../../services/files/read.js";
import { SandboxIdParam } from "../sandboxes/schemas.js";
import { PathBody } from "./schemas.js";

const route = createRoute({
  method: "post",
  path: "/{id}/files/read",
  tags: ["files"],
  operationId: "readFile",
  summary: "Download a file (streamed)",
  ...scoped("files:read"),
  request: { params: SandboxIdParam, body: { required: true, content: { "application/json": { schema: PathBody } } } },
  responses: {
    200: {
      description: "The file's bytes",
      content: { "application/octet-stream": { schema: z.string().openapi({ format: "binary" }) } },
    },
    ...openApiErrorResponses,
    ...openApiAgentErrorResponses,
  },
});

/** POST /v1/sandboxes/{id}/files/read */
export const registerReadFile = (app: App) =>
  app.openapi(route, async (c) => {
    const body = c.req.valid("json");
    const file = await readFile(c.get("team"), c.req.valid("param").id, body, c.req.raw.signal);
    // Guest bytes on the API's origin: inert, never rendered or sniffed into something a browser runs.
    const headers: Record<string, string> = {
      "content-type": "application/octet-stream",
      "x-content-type-options": "nosniff",
      "content-security-policy": "sandbox",
      "content-disposition": "attachment",
    };
    if (file.size !== undefined) headers["content-length"] = String(file.size);
    return markRelayed(new Response(file.body, { status: 200, headers }));
  });
