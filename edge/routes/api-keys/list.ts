import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { listApiKeys } from "../../services/api-keys/list.js";
import { ApiKey, ListApiKeysQuery } from "./schemas.js";

const listKeysRoute = createRoute({
  method: "get",
  path: "/",
  tags: ["api-keys"],
  operationId: "listApiKeys",
  summary: "List the team's API keys",
  ...scoped("keys:read"),
  request: { query: ListApiKeysQuery },
  responses: {
    200: { description: "Keys", content: { "application/json": { schema: z.object({ apiKeys: z.array(ApiKey) }) } } },
    ...openApiErrorResponses,
  },
});

/** GET /v1/api-keys */
export const registerListApiKeys = (app: App) =>
  app.openapi(listKeysRoute, async (c) =>
    c.json({ apiKeys: await listApiKeys(c.get("team"), { allTeams: c.req.valid("query").all === "true" }) }, 200),
  );
