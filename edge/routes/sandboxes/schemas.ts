import { z } from "@hono/zod-openapi";
import { isolationClasses, sandboxStates, stopReasons, timeoutActions } from "../../contracts/enums.js";

/** Path parameter of every /v1/sandboxes/{id} route. */
export const SandboxIdParam = z.object({
  id: z.string().openapi({
    param: { name: "id", in: "path" },
    example: "a1b2c3d4e5f6g7h8i9j0",
    description: "Sandbox id (20 characters of [a-z0-9])",
  }),
});

const stringMap = z.record(z.string().max(256), z.string().max(8192));

/** A sandbox. */
export const Sandbox = z
  .object({
    id: z.string().openapi({ example: "a1b2c3d4e5f6g7h8i9j0" }),
    teamId: z.string(),
    hostId: z.string().nullable(),
    template: z.string(),
    state: z.enum(sandboxStates),
    vcpus: z.number().int(),
    memoryMb: z.number().int(),
    timeoutSec: z.number().int(),
    onTimeout: z.enum(timeoutActions),
    endAt: z
      .string()
      .nullable()
      .openapi({ description: "When the timeout action runs (RFC 3339); null while paused or without timeout" }),
    metadata: z.record(z.string(), z.string()),
    envdVersion: z.string(),
    runtime: z.string().openapi({ description: "Runtime of its host (firecracker, qemu, gvisor, namespace)" }),
    isolation: z
      .enum(isolationClasses)
      .nullable()
      .openapi({ description: "Isolation class of its host (vm, gvisor, namespace); null before placement" }),
    stopReason: z.enum(stopReasons).nullable(),
    error: z.string().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
    startedAt: z.string().nullable(),
    stoppedAt: z.string().nullable(),
  })
  .openapi("Sandbox");

/** Body of POST /v1/sandboxes. */
export const CreateSandboxBody = z
  .object({
    template: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, "letters, digits, '.', '_' and '-' (at most 64)")
      .default("minimal"),
    vcpus: z.number().int().min(1).max(64).default(1),
    memoryMb: z.number().int().min(128).max(262_144).default(512),
    timeoutSec: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400)
      .default(300)
      .openapi({
        description:
          "Seconds until the timeout action runs; 0 means never (only for teams allowed it). At most the team's maxTimeoutSec",
      }),
    onTimeout: z.enum(timeoutActions).default("kill"),
    envVars: stringMap.default({}),
    metadata: stringMap.default({}),
    internetAccess: z
      .boolean()
      .optional()
      .openapi({ description: "Whether the sandbox may reach the internet (default true)" }),
    isolation: z.enum(isolationClasses).optional().openapi({
      description:
        "The weakest isolation class the sandbox may run on (vm > gvisor > namespace). The team's minimum applies too; the stronger wins. No host that qualifies → 503 NO_CAPACITY",
    }),
  })
  .openapi("CreateSandboxRequest");

/** Answer of POST /v1/sandboxes: the sandbox plus the token envd expects. */
export const CreatedSandbox = Sandbox.extend({
  envdAccessToken: z.string().openapi({ description: "Token envd requires in X-Access-Token (shown on create)" }),
}).openapi("CreatedSandbox");

/** Query of GET /v1/sandboxes. */
export const ListSandboxesQuery = z.object({
  state: z
    .string()
    .optional()
    .openapi({
      description: `Comma-separated states (${sandboxStates.join(", ")}); default: all but stopped and error`,
    }),
  metadata: z
    .string()
    .optional()
    .openapi({ description: "URL-encoded key=value pairs, all of which must match, e.g. `user%3Dalice%26app%3Dprod`" }),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  nextToken: z.string().optional(),
});

/** Answer of GET /v1/sandboxes. */
export const SandboxPage = z
  .object({ sandboxes: z.array(Sandbox), nextToken: z.string().nullable() })
  .openapi("SandboxPage");

/** Body of POST /v1/sandboxes/{id}/exec and /exec/stream. */
export const ExecBody = z
  .object({
    cmd: z.string().min(1).max(1_048_576).openapi({ description: "Program, or a bash script when `args` is absent" }),
    args: z.array(z.string().max(1_048_576)).max(10_000).optional(),
    envs: stringMap.optional(),
    cwd: z.string().max(4096).optional(),
    user: z.string().max(64).optional(),
    timeoutSec: z.number().int().min(1).max(86_400).optional(),
    stdin: z
      .string()
      .max(8 * 1_048_576)
      .optional(),
  })
  .openapi("ExecRequest");

/** Answer of POST /v1/sandboxes/{id}/exec. */
export const ExecResult = z
  .object({
    stdout: z.string(),
    stderr: z.string(),
    exitCode: z.number().int(),
    encoding: z.enum(["utf-8", "base64"]).openapi({ description: "base64 when either stream is not valid UTF-8" }),
    error: z.string().optional(),
    truncated: z.boolean(),
    durationMs: z.number().int(),
  })
  .openapi("ExecResult");

/** Body of POST /v1/sandboxes/{id}/resume. */
export const ResumeBody = z
  .object({
    timeoutSec: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400)
      .optional(),
  })
  .openapi("ResumeRequest");

/** Body of POST /v1/sandboxes/{id}/timeout. */
export const TimeoutBody = z
  .object({
    timeoutSec: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400),
    onTimeout: z.enum(timeoutActions).optional(),
  })
  .openapi("TimeoutRequest");
