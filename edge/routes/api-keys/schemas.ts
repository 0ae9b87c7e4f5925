import { z } from "@hono/zod-openapi";

/** An API key (never its secret). */
export const ApiKey = z
  .object({
    id: z.string(),
    teamId: z.string(),
    name: z.string(),
    prefix: z.string().openapi({ description: "First characters of the secret, to tell keys apart" }),
    isAdmin: z.boolean(),
    createdAt: z.string(),
    lastUsedAt: z.string().nullable(),
    revokedAt: z.string().nullable(),
  })
  .openapi("ApiKey");

/** A created key, with its secret: shown this once. */
export const CreatedApiKey = ApiKey.extend({
  secret: z.string().openapi({ description: "The key itself; store it now, it is not shown again" }),
}).openapi("CreatedApiKey");

/** Body of POST /v1/api-keys. */
export const CreateApiKeyBody = z
  .object({
    name: z.string().min(1).max(200).default("Unnamed key"),
    teamId: z.string().min(1).max(64).optional().openapi({ description: "Admin only: an existing team" }),
    newTeamName: z
      .string()
      .min(1)
      .max(200)
      .optional()
      .openapi({ description: "Admin only: create a team for the key" }),
    isAdmin: z.boolean().optional().openapi({ description: "Admin only: make an admin key" }),
  })
  .openapi("CreateApiKeyRequest");

/** Path parameter of /v1/api-keys/{id}. */
export const ApiKeyIdParam = z.object({
  id: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: "id", in: "path" }, example: "key_0123456789abcdef" }),
});

/** Query of GET /v1/api-keys. */
export const ListApiKeysQuery = z.object({
  all: z.enum(["true", "false"]).optional().openapi({ description: "Admin only: every team's keys" }),
});
