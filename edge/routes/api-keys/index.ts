import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { createApiKey } from "../../services/api-keys/create.js";
import { listApiKeys } from "../../services/api-keys/list.js";
import { revokeApiKey } from "../../services/api-keys/revoke.js";
import { apiKeySecurity, newRouter } from "../router.js";
import { ApiKey, ApiKeyIdParam, CreateApiKeyBody, CreatedApiKey, ListApiKeysQuery } from "./schemas.js";

const createKeyRoute = createRoute({
  method: "post",
  path: "/",
  tags: ["api-keys"],
  operationId: "createApiKey",
  summary: "Create an API key (its secret is shown once)",
  security: apiKeySecurity,
  request: { body: { content: { "application/json": { schema: CreateApiKeyBody } } } },
  responses: {
    201: { description: "The key and its secret", content: { "application/json": { schema: CreatedApiKey } } },
    ...openApiErrorResponses,
  },
});

const listKeysRoute = createRoute({
  method: "get",
  path: "/",
  tags: ["api-keys"],
  operationId: "listApiKeys",
  summary: "List the team's API keys",
  security: apiKeySecurity,
  request: { query: ListApiKeysQuery },
  responses: {
    200: { description: "Keys", content: { "application/json": { schema: z.object({ apiKeys: z.array(ApiKey) }) } } },
    ...openApiErrorResponses,
  },
});

const revokeKeyRoute = createRoute({
  method: "delete",
  path: "/{id}",
  tags: ["api-keys"],
  operationId: "revokeApiKey",
  summary: "Revoke an API key",
  security: apiKeySecurity,
  request: { params: ApiKeyIdParam },
  responses: {
    200: { description: "The revoked key", content: { "application/json": { schema: ApiKey } } },
    ...openApiErrorResponses,
  },
});

/** The /v1/api-keys router. */
export function apiKeysRouter(): App {
  const app = newRouter();
  app.openapi(createKeyRoute, async (c) => c.json(await createApiKey(c.get("team"), c.req.valid("json")), 201));
  app.openapi(listKeysRoute, async (c) =>
    c.json({ apiKeys: await listApiKeys(c.get("team"), { allTeams: c.req.valid("query").all === "true" }) }, 200),
  );
  app.openapi(revokeKeyRoute, async (c) => c.json(await revokeApiKey(c.get("team"), c.req.valid("param").id), 200));
  return app;
}
