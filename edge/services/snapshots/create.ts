import { and, eq, inArray } from "drizzle-orm";
import { agentErrorToServiceError, agentTimeouts, isAgentAnswer } from "../../clients/agent.js";
import { type SnapshotRow, snapshots } from "../../db/schema/index.js";
import { runtimeName } from "../agent-mapping.js";
import type { TeamContext } from "../context.js";
import { BadRequestError, ConflictError, NotFoundError, ServiceError } from "../errors.js";
import { recordSnapshotCreated } from "../events/record.js";
import { loadPlacedSandbox } from "../sandboxes/load.js";
import { newSnapshotId, snapshotNamePattern } from "./load.js";
import { type SnapshotView, toSnapshotView } from "./view.js";

/** Input of `createSnapshot`. */
export interface CreateSnapshotInput {
  /** E2B's optional name: unique among the team's live snapshots; `Sandbox.create(name)` finds it too. */
  name?: string | undefined;
}

/** Sandbox states a snapshot can be taken in: running (frozen while copied, then runs on) or paused. */
const snapshotableStates = new Set(["running", "paused"]);

/** Whether an error is Postgres's unique violation (of the team's snapshot names). */
function isUniqueViolation(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if ((e as { code?: unknown }).code === "23505") return true;
  }
  return false;
}

/**
 * Takes a snapshot of a sandbox of the caller's team on the host that runs it. The row is written
 * first as `creating` (so a crash from here on leaves a row the reconcile sweep settles against the
 * host's ListSnapshots), then the agent is asked, then the row becomes `ready` with what the agent
 * reported, or `error` with the reason. When the agent could not be reached the snapshot may still
 * exist there: a best-effort DeleteSnapshot follows, and the sweep deletes what that misses.
 */
export async function createSnapshot(
  ctx: TeamContext,
  sandboxId: string,
  input: CreateSnapshotInput = {},
): Promise<SnapshotView> {
  if (input.name !== undefined && !snapshotNamePattern.test(input.name)) {
    throw new BadRequestError(
      "name must be 1–63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
      {
        name: "invalid",
      },
    );
  }
  const { sandbox, host, agent } = await loadPlacedSandbox(ctx, sandboxId);
  // A stopped or failed sandbox is gone, as on E2B: not found rather than in the wrong state.
  if (sandbox.state === "stopped" || sandbox.state === "error") throw new NotFoundError("sandbox", sandboxId);
  if (!snapshotableStates.has(sandbox.state)) {
    throw new ConflictError(`sandbox ${sandboxId} is ${sandbox.state}; a snapshot needs it running or paused`);
  }
  const id = newSnapshotId();
  const now = ctx.now();
  let pending: SnapshotRow;
  try {
    const [row] = await ctx.db
      .insert(snapshots)
      .values({
        id,
        teamId: ctx.principal.teamId,
        sourceSandboxId: sandbox.id,
        hostId: host.id,
        template: sandbox.template,
        runtime: sandbox.runtime || host.runtime,
        vcpus: sandbox.vcpus,
        memoryMb: sandbox.memoryMb,
        name: input.name ?? null,
        state: "creating",
        createdAt: now,
        updatedAt: now,
      })
      .returning();
    if (!row) throw new Error("insert into snapshots returned no row");
    pending = row;
  } catch (err) {
    if (isUniqueViolation(err)) throw new ConflictError(`a snapshot named "${input.name}" already exists`);
    throw err;
  }
  const log = ctx.logger.child({ snapshotId: id, sandboxId, hostId: host.id });
  let taken: Awaited<ReturnType<typeof agent.createSnapshot>>;
  try {
    taken = await agent.createSnapshot({ sandboxId, snapshotId: id }, { timeoutMs: agentTimeouts.lifecycle });
  } catch (err) {
    const failure = agentErrorToServiceError(err, "create snapshot");
    log.warn("create snapshot failed", { err, code: failure.code });
    await settle(ctx, pending, { state: "error", error: failure.message });
    if (!isAgentAnswer(err)) {
      agent.deleteSnapshot({ snapshotId: id }, { timeoutMs: agentTimeouts.default }).catch(() => {});
    }
    throw failure;
  }
  const info = taken.snapshot;
  const ready = await settle(ctx, pending, {
    state: "ready",
    keepsMemory: info?.keepsMemory ?? false,
    sizeBytes: Number(info?.sizeBytes ?? 0n),
    ...(info?.template ? { template: info.template } : {}),
    ...(info && info.runtime !== 0 ? { runtime: runtimeName(info.runtime) } : {}),
    ...(info?.vcpus ? { vcpus: info.vcpus } : {}),
    ...(info?.memoryMb ? { memoryMb: info.memoryMb } : {}),
  });
  if (!ready) {
    // The sweep (or a delete) settled the row while the agent worked: the agent's copy must go.
    await agent.deleteSnapshot({ snapshotId: id }, { timeoutMs: agentTimeouts.default }).catch(() => {});
    throw new ServiceError("AGENT_ERROR", `create snapshot: snapshot ${id} was settled while it was being taken`);
  }
  log.info("snapshot created", { keepsMemory: ready.keepsMemory, sizeBytes: ready.sizeBytes });
  return toSnapshotView(ready);
}

/** Moves a `creating` row on, compare-and-set on its version; null when it was no longer `creating`. */
async function settle(
  ctx: TeamContext,
  row: SnapshotRow,
  patch: Partial<typeof snapshots.$inferInsert>,
): Promise<SnapshotRow | null> {
  return ctx.db.transaction(async (tx) => {
    const [updated] = await tx
      .update(snapshots)
      .set({ ...patch, version: row.version + 1, updatedAt: ctx.now() })
      .where(and(eq(snapshots.id, row.id), eq(snapshots.version, row.version), inArray(snapshots.state, ["creating"])))
      .returning();
    // The public event commits with the snapshot turning ready (docs/events-and-webhooks.md).
    if (updated?.state === "ready") {
      await recordSnapshotCreated(tx, {
        teamId: updated.teamId,
        snapshotId: updated.id,
        sandboxId: updated.sourceSandboxId,
        hostId: updated.hostId,
        data: { name: updated.name, keepsMemory: updated.keepsMemory, sizeBytes: updated.sizeBytes },
      });
    }
    return updated ?? null;
  });
}
