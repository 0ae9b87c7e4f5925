import { createRoute, z } from "@hono/zod-openapi";
import { stream } from "hono/streaming";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { toApiError } from "../../errors/handle.js";
import { scoped } from "../../middleware/auth.js";
import { listConnections, watchConnections } from "../../services/sandboxes/network.js";
import { ConnectionPage, ConnectionsQuery, ConnectionsStreamQuery, SandboxIdParam } from "./schemas.js";

const listRoute = createRoute({
  method: "get",
  path: "/{id}/connections",
  tags: ["sandboxes"],
  operationId: "listSandboxConnections",
  summary: "Read a sandbox's connection log",
  description:
    "Every outbound connection attempt and DNS question, oldest first, with its verdict and the deciding rule. " +
    "Kept by the sandbox's host (the last 10,000 entries, 24 h after the sandbox ends), so it reads after the " +
    "sandbox stopped too. Page with `after` = the previous answer's `nextAfter`.",
  ...scoped("sandboxes:read"),
  request: { params: SandboxIdParam, query: ConnectionsQuery },
  responses: {
    200: { description: "A page of the log", content: { "application/json": { schema: ConnectionPage } } },
    ...openApiErrorResponses,
    ...openApiAgentErrorResponses,
  },
});

const streamRoute = createRoute({
  method: "get",
  path: "/{id}/connections/stream",
  tags: ["sandboxes"],
  operationId: "streamSandboxConnections",
  summary: "Follow a sandbox's connection log (NDJSON)",
  description:
    "One Connection per line: the entries after `after`, then each new one as it happens, until the client " +
    "leaves. An entry comes again when its connection ends (same seq, with bytes and endedAt). A failure after " +
    'the stream started is one last line `{"error":{"code","message"}}`.',
  ...scoped("sandboxes:read"),
  request: { params: SandboxIdParam, query: ConnectionsStreamQuery },
  responses: {
    200: { description: "Newline-delimited JSON", content: { "application/x-ndjson": { schema: z.string() } } },
    ...openApiErrorResponses,
    ...openApiAgentErrorResponses,
  },
});

/** GET /v1/sandboxes/{id}/connections and /connections/stream */
export const registerConnections = (app: App) => {
  app.openapi(listRoute, async (c) => {
    const { since, ...query } = c.req.valid("query");
    const page = await listConnections(c.get("team"), c.req.valid("param").id, {
      ...query,
      ...(since ? { since: new Date(since) } : {}),
    });
    return c.json(page, 200);
  });
  app.openapi(streamRoute, async (c) => {
    const abort = new AbortController();
    const records = await watchConnections(c.get("team"), c.req.valid("param").id, c.req.valid("query"), abort.signal);
    c.header("content-type", "application/x-ndjson");
    c.header("cache-control", "no-store");
    const ndjson = stream(c, async (out) => {
      out.onAbort(() => abort.abort());
      try {
        for await (const record of records) await out.writeln(JSON.stringify(record));
      } catch (err) {
        const failure = toApiError(err);
        if (failure.status >= 500) c.get("logger").warn("connection stream failed", { err, code: failure.code });
        const message = failure.code === "INTERNAL_SERVER_ERROR" ? "internal error" : failure.message;
        await out.writeln(JSON.stringify({ error: { code: failure.code, message } }));
      }
    });
    // zod-openapi types every application/…json… answer as c.json()'s; this one is a plain streamed Response.
    return ndjson as never;
  });
};
