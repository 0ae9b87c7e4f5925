import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { listSandboxCommands, MAX_QUERY_CHARS, searchCommands } from "../../services/commands/list.js";
import { newRouter } from "../router.js";
import { SandboxIdParam } from "../sandboxes/schemas.js";

const OutputEdges = z
  .object({
    head: z.string().openapi({ description: "The first 64 KiB as text (invalid UTF-8 replaced by U+FFFD)" }),
    tail: z.string().openapi({ description: "The last 64 KiB after the head; empty when everything fit in the head" }),
    bytes: z.number().int().openapi({ description: "Everything the command wrote to the stream, in bytes" }),
  })
  .openapi("CommandOutput");

export const Command = z
  .object({
    commandId: z.string(),
    sandboxId: z.string(),
    commandLine: z.string(),
    cmd: z.string(),
    args: z.array(z.string()),
    user: z.string(),
    cwd: z.string(),
    pid: z.number().int(),
    startedAt: z.string().openapi({ description: "RFC 3339" }),
    endedAt: z.string().nullable().openapi({ description: "Null while it runs" }),
    exitCode: z.number().int().nullable().openapi({ description: "-1 when killed by a signal; null while it runs" }),
    error: z.string().nullable(),
    durationMs: z.number().int().nullable(),
    stdout: OutputEdges,
    stderr: OutputEdges,
    background: z.boolean(),
    callbackState: z.string().nullable().openapi({ description: "pending, queued or done (background commands)" }),
  })
  .openapi("Command");

const CommandPage = z.object({ commands: z.array(Command), nextToken: z.string().nullable() }).openapi("CommandPage");

const PageQuery = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  nextToken: z.string().max(512).optional(),
});

const listRoute = createRoute({
  method: "get",
  path: "/v1/sandboxes/{id}/commands",
  tags: ["commands"],
  operationId: "listSandboxCommands",
  summary: "A sandbox's command history",
  description:
    "Every process envd ran in the sandbox (through the API, the SDKs or a terminal), newest first, with its " +
    "exit code and the first and last 64 KiB of stdout and stderr. Kept after the sandbox ended, for " +
    "WRENN_COMMAND_HISTORY_DAYS (default 7).",
  ...scoped("sandboxes:read"),
  request: { params: SandboxIdParam, query: PageQuery },
  responses: {
    200: { description: "A page of commands", content: { "application/json": { schema: CommandPage } } },
    ...openApiErrorResponses,
  },
});

const searchRoute = createRoute({
  method: "get",
  path: "/v1/commands",
  tags: ["commands"],
  operationId: "searchCommands",
  summary: "Search the team's command history",
  description:
    'Full-text search (Postgres, `simple` configuration; web-search syntax: words, "phrases", -not, or) over ' +
    "command lines and output of every sandbox of the team, best match first.",
  ...scoped("sandboxes:read"),
  request: {
    query: PageQuery.extend({
      q: z.string().min(1).max(MAX_QUERY_CHARS),
      sandboxId: z.string().max(64).optional(),
    }),
  },
  responses: {
    200: { description: "A page of matches", content: { "application/json": { schema: CommandPage } } },
    ...openApiErrorResponses,
  },
});

/** GET /v1/sandboxes/{id}/commands and GET /v1/commands (issue 22's command history). */
export function commandsRouter(): App {
  const app = newRouter();
  app.openapi(listRoute, async (c) => {
    const query = c.req.valid("query");
    return c.json(await listSandboxCommands(c.get("team"), c.req.valid("param").id, query), 200);
  });
  app.openapi(searchRoute, async (c) => c.json(await searchCommands(c.get("team"), c.req.valid("query")), 200));
  return app;
}
