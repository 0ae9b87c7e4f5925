import { z } from "@hono/zod-openapi";
import { isolationClasses } from "../../contracts/enums.js";

/** Path parameter of /v1/teams/{id}; `me` is the caller's own team. */
export const TeamIdParam = z.object({
  id: z
    .string()
    .min(1)
    .max(64)
    .openapi({
      param: { name: "id", in: "path" },
      example: "team_0123456789abcdef",
      description: "A team id, or `me`",
    }),
});

const quotaFields = {
  maxRunningSandboxes: z.number().int().min(0).max(100_000).openapi({
    description: "Sandboxes running at once (every state but paused)",
  }),
  maxVcpus: z.number().int().min(0).max(1_000_000).openapi({ description: "vCPUs summed over running sandboxes" }),
  maxMemoryMb: z
    .number()
    .int()
    .min(0)
    .max(1_000_000_000)
    .openapi({ description: "Memory (MiB) summed over running sandboxes" }),
  maxPausedSandboxes: z.number().int().min(0).max(1_000_000).openapi({ description: "Paused sandboxes" }),
  maxPausedDiskMb: z
    .number()
    .int()
    .min(0)
    .max(1_000_000_000)
    .openapi({ description: "Disk (MiB) held by paused sandboxes' snapshots, as the agents reported them" }),
  maxTimeoutSec: z
    .number()
    .int()
    .min(1)
    .max(30 * 86_400)
    .openapi({ description: "Longest timeout a sandbox may be given" }),
  allowNoTimeout: z.boolean().openapi({ description: "Whether timeoutSec 0 (never time out) is allowed" }),
  maxApiKeys: z.number().int().min(0).max(100_000).openapi({ description: "API keys that are not revoked" }),
};

/** Every limit, as enforced. */
export const TeamQuotas = z.object(quotaFields).openapi("TeamQuotas");

/** What a team holds now. */
export const TeamUsage = z
  .object({
    runningSandboxes: z.number().int(),
    vcpus: z.number().int(),
    memoryMb: z.number().int(),
    pausedSandboxes: z.number().int(),
    pausedDiskMb: z.number().int(),
    apiKeys: z.number().int(),
  })
  .openapi("TeamUsage");

/** A team with its settings and usage. */
export const Team = z
  .object({
    id: z.string(),
    name: z.string(),
    minIsolation: z.enum(isolationClasses).nullable().openapi({
      description: "The weakest isolation class the team's sandboxes may run on (vm > gvisor > namespace); null: any",
    }),
    quotas: TeamQuotas.openapi({ description: "The limits in force (overrides over the defaults)" }),
    quotaOverrides: TeamQuotas.partial().openapi({ description: "The limits an admin set for this team" }),
    usage: TeamUsage,
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi("Team");

/** Body of PATCH /v1/teams/{id}: a field left out stays; null resets it to the default. */
export const UpdateTeamBody = z
  .object({
    minIsolation: z.enum(isolationClasses).nullable().optional().openapi({
      description: "The weakest isolation class the team's sandboxes may run on; null removes the minimum",
    }),
    quotas: z
      .object(
        Object.fromEntries(Object.entries(quotaFields).map(([k, v]) => [k, v.nullable().optional()])) as {
          [K in keyof typeof quotaFields]: z.ZodOptional<z.ZodNullable<(typeof quotaFields)[K]>>;
        },
      )
      .strict()
      .optional()
      .openapi({ description: "Limits to set; null puts one back to the default" }),
  })
  .strict()
  .openapi("UpdateTeamRequest");
