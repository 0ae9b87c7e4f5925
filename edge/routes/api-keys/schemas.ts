import { z } from "@hono/zod-openapi";
import { apiKeyScopes } from "../../services/auth/scopes.js";

/** A scope of an API key. */
export const ApiKeyScopeSchema = z.enum(apiKeyScopes).openapi("ApiKeyScope", {
  description: "What a key may do; each route's description names the scope it needs. `admin` holds every scope.",
});

/** A key's own request rate (a token bucket). */
export const RateLimitSchema = z
  .object({
    perSec: z.number().positive().max(1_000_000).openapi({ description: "Tokens added per second" }),
    burst: z.number().int().min(1).max(1_000_000).openapi({ description: "Bucket size: requests allowed at once" }),
  })
  .openapi("RateLimit");

/** An API key (never its secret). */
export const ApiKey = z
  .object({
    id: z.string(),
    teamId: z.string(),
    name: z.string(),
    prefix: z.string().openapi({ description: "First characters of the secret, to tell keys apart" }),
    isAdmin: z.boolean(),
    scopes: z.array(z.string()).openapi({ description: "What the key may do (`admin` on admin keys)" }),
    expiresAt: z.string().nullable().openapi({ description: "When the key stops working; null: never" }),
    rateLimit: RateLimitSchema.nullable().openapi({ description: "The key's own rate; null: the edge's default" }),
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
    scopes: z
      .array(ApiKeyScopeSchema)
      .min(1)
      .max(apiKeyScopes.length)
      .optional()
      .openapi({ description: "Default: the caller's own scopes. A non-admin key may grant only scopes it holds" }),
    expiresAt: z.iso
      .datetime({ offset: true })
      .optional()
      .openapi({ description: "When the key stops working (ISO 8601); default: never, or the caller's own expiry" }),
    rateLimit: RateLimitSchema.optional().openapi({ description: "Admin only: the key's own request rate" }),
  })
  .openapi("CreateApiKeyRequest");

/** Body of PATCH /v1/api-keys/{id}; absent fields are left alone. */
export const UpdateApiKeyBody = z
  .object({
    name: z.string().min(1).max(200).optional(),
    scopes: z
      .array(ApiKeyScopeSchema)
      .min(1)
      .max(apiKeyScopes.length)
      .optional()
      .openapi({ description: "The key's new scopes (not `admin`); never more than the caller holds" }),
    expiresAt: z.iso
      .datetime({ offset: true })
      .nullable()
      .optional()
      .openapi({ description: "A new expiry (ISO 8601); null: never (admin, or a caller that never expires)" }),
    rateLimit: RateLimitSchema.nullable()
      .optional()
      .openapi({ description: "Admin only: the key's own rate; null: back to the edge's default" }),
  })
  .openapi("UpdateApiKeyRequest");

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
