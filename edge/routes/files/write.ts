import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { ApiError, openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { writeFile } from "../../services/files/write.js";
import { SandboxIdParam } from "../sandboxes/schemas.js";
import { WriteQuery, WrittenFile } from "./schemas.js";

const route = createRoute({
  method: "post",
  path: "/{id}/files/write",
  tags: ["files"],
  operationId: "writeFile",
  summary: "Upload a file (multipart, streamed)",
  description:
    "multipart/form-data with a `path` field followed by a `file` part. The file is streamed through to the sandbox, " +
    "never buffered whole; uploads over the configured limit answer 413.",
  ...scoped("files:write"),
  request: {
    params: SandboxIdParam,
    query: WriteQuery,
    // A plain schema object (not zod): zod-openapi would otherwise parse, and buffer, the whole form.
    body: {
      required: true,
      content: {
        "multipart/form-data": {
          schema: {
            type: "object",
            required: ["file"],
            properties: { path: { type: "string" }, file: { type: "string", format: "binary" } },
          },
        },
      },
    },
  },
  responses: {
    200: { description: "Written", content: { "application/json": { schema: WrittenFile } } },
    413: { description: "The upload is larger than the limit (`PAYLOAD_TOO_LARGE`)" },
    ...openApiErrorResponses,
    ...openApiAgentErrorResponses,
  },
});

/** POST /v1/sandboxes/{id}/files/write */
export const registerWriteFile = (app: App) =>
  app.openapi(route, async (c) => {
    const lengthHeader = c.req.header("content-length");
    const contentLength = lengthHeader === undefined ? undefined : Number(lengthHeader);
    if (contentLength !== undefined && !Number.isSafeInteger(contentLength)) {
      throw new ApiError("BAD_REQUEST", "invalid Content-Length");
    }
    const query = c.req.valid("query");
    const written = await writeFile(c.get("team"), c.req.valid("param").id, {
      contentType: c.req.header("content-type"),
      contentLength,
      body: c.req.raw.body,
      ...(query.path ? { path: query.path } : {}),
      ...(query.user ? { user: query.user } : {}),
    });
    return c.json(written, 200);
  });
