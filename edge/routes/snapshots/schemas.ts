import { z } from "@hono/zod-openapi";
import { snapshotStates } from "../../contracts/snapshots.js";
import { ErrorBody } from "../../errors/api-error.js";
import { maxForkCount } from "../../services/snapshots/fork.js";
import { CreatedSandbox } from "../sandboxes/schemas.js";

/** Path parameter of /v1/snapshots/{id}. */
export const SnapshotIdParam = z.object({
  id: z.string().openapi({
    param: { name: "id", in: "path" },
    example: "k3j4h5g6f7d8s9a0q1w2",
    description: "Snapshot id (20 characters of [a-z0-9])",
  }),
});

/** A snapshot. */
export const Snapshot = z
  .object({
    id: z.string(),
    teamId: z.string(),
    name: z.string().nullable(),
    sourceSandboxId: z.string(),
    hostId: z
      .string()
      .nullable()
      .openapi({ description: "The host that holds it; sandboxes from it start only there" }),
    template: z.string(),
    runtime: z.string(),
    keepsMemory: z.boolean().openapi({
      description:
        "True: sandboxes from it resume the source's memory and running processes. False (namespace runtime): files only, processes start fresh",
    }),
    vcpus: z.number().int(),
    memoryMb: z.number().int(),
    sizeBytes: z.number().int(),
    state: z.enum(snapshotStates),
    error: z.string().nullable(),
    createdAt: z.string(),
  })
  .openapi("Snapshot");

/** Body of POST /v1/sandboxes/{id}/snapshots. */
export const CreateSnapshotBody = z
  .object({
    name: z
      .string()
      .optional()
      .openapi({ description: "Unique among the team's snapshots; 1–63 of a-z, 0-9, '.', '_', '-'" }),
  })
  .openapi("CreateSnapshotRequest");

/** Query of GET /v1/snapshots. */
export const ListSnapshotsQuery = z.object({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  nextToken: z.string().optional(),
  sandboxId: z.string().optional().openapi({ description: "Only snapshots of this sandbox" }),
  name: z.string().optional(),
  state: z
    .string()
    .optional()
    .openapi({ description: `Comma-separated states (${snapshotStates.join(", ")}); default: ready` }),
});

/** Answer of GET /v1/snapshots. */
export const SnapshotPage = z
  .object({ snapshots: z.array(Snapshot), nextToken: z.string().nullable() })
  .openapi("SnapshotPage");

/** Body of POST /v1/sandboxes/{id}/fork. */
export const ForkBody = z
  .object({
    count: z.number().int().min(1).max(maxForkCount).default(1),
    timeoutSec: z
      .number()
      .int()
      .min(1)
      .max(30 * 86_400)
      .default(300)
      .openapi({ description: "Each fork's timeout (kill at the end), at most the team's maxTimeoutSec" }),
  })
  .openapi("ForkSandboxRequest");

/** One fork's outcome: `sandbox` when it started, else `error` in the house error shape. */
export const ForkResult = z
  .object({
    sandbox: CreatedSandbox.optional(),
    error: ErrorBody.shape.error.optional(),
  })
  .openapi("ForkResult");

/** Answer of POST /v1/sandboxes/{id}/fork. */
export const ForkAnswer = z.object({ forks: z.array(ForkResult) }).openapi("ForkSandboxResponse");
