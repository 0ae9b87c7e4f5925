import { and, eq } from "drizzle-orm";
import { snapshots } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { BadRequestError, ServiceError } from "../errors.js";
import { type CreatedSandbox, type CreateSandboxInput, createSandbox } from "../sandboxes/create.js";
import { loadSandbox } from "../sandboxes/load.js";
import { createSnapshot } from "./create.js";
import { forgetOnHost } from "./delete.js";

/** Most forks one call may ask for (E2B's default is 1). */
export const maxForkCount = 10;

/** Input of `forkSandbox`. */
export interface ForkSandboxInput {
  /** How many sandboxes to start from the one snapshot: 1–`maxForkCount`. */
  count: number;
  /** Seconds until each fork's timeout (kill); E2B's default is 15. */
  timeoutSec: number;
}

/** One fork's outcome: the sandbox, or why it did not start. */
export type ForkResult = { sandbox: CreatedSandbox; error?: undefined } | { sandbox?: undefined; error: ServiceError };

/**
 * Forks a sandbox of the caller's team: one snapshot of it (the source runs on), then `count`
 * sandboxes from that snapshot on its host, one after another, each succeeding or failing on its own
 * (team quotas are checked per fork, as for any create). The snapshot is only the forks' starting
 * point: it is deleted once they started (the host keeps its files while they read them), so it is
 * never listed. A failure before any fork (no such sandbox, the snapshot failed) fails the call.
 */
export async function forkSandbox(ctx: TeamContext, sandboxId: string, input: ForkSandboxInput): Promise<ForkResult[]> {
  if (!Number.isInteger(input.count) || input.count < 1 || input.count > maxForkCount) {
    throw new BadRequestError(`count must be an integer from 1 to ${maxForkCount}`, { count: "out of range" });
  }
  const source = await loadSandbox(ctx, sandboxId);
  const snapshot = await createSnapshot(ctx, sandboxId);
  const results: ForkResult[] = [];
  try {
    for (let i = 0; i < input.count; i++) {
      const fork: CreateSandboxInput = {
        template: snapshot.template,
        vcpus: snapshot.vcpus,
        memoryMb: snapshot.memoryMb,
        timeoutSec: input.timeoutSec,
        onTimeout: "kill",
        envVars: {},
        metadata: source.metadata,
        snapshotId: snapshot.id,
        ...(source.network ? { network: source.network } : {}),
        ...(source.internetAccess !== null ? { internetAccess: source.internetAccess } : {}),
      };
      try {
        results.push({ sandbox: await createSandbox(ctx, fork) });
      } catch (err) {
        if (!(err instanceof ServiceError)) throw err;
        ctx.logger.warn("fork failed", { sandboxId, snapshotId: snapshot.id, fork: i, code: err.code });
        results.push({ error: err });
      }
    }
  } finally {
    const [row] = await ctx.db
      .update(snapshots)
      .set({ state: "deleted", deletedAt: ctx.now(), updatedAt: ctx.now() })
      .where(and(eq(snapshots.id, snapshot.id), eq(snapshots.state, "ready")))
      .returning();
    if (row) await forgetOnHost(ctx, row);
  }
  return results;
}
