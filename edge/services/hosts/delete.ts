import { and, eq, inArray } from "drizzle-orm";
import { activeSandboxStates, hosts, sandboxEvents, sandboxes } from "../../db/schema/index.js";
import { recordAudit } from "../audit/record.js";
import type { ServiceContext } from "../context.js";
import { ConflictError, NotFoundError, ServiceError } from "../errors.js";
import { recordSandboxChange } from "../events/record.js";

/**
 * Removes a host. With sandboxes still placed on it the call is refused (CONFLICT, naming them),
 * unless `force`, which marks them `stopped` (reason `lost`) without calling the agent.
 */
export async function deleteHost(ctx: ServiceContext, hostId: string, options: { force: boolean }): Promise<void> {
  await ctx.db.transaction(async (tx) => {
    const [host] = await tx.select({ id: hosts.id }).from(hosts).where(eq(hosts.id, hostId)).for("update");
    if (!host) throw new NotFoundError("host", hostId);
    const placed = await tx
      .select({ id: sandboxes.id, teamId: sandboxes.teamId, state: sandboxes.state })
      .from(sandboxes)
      .where(and(eq(sandboxes.hostId, hostId), inArray(sandboxes.state, [...activeSandboxStates])));
    if (placed.length > 0 && !options.force) {
      const err = new ConflictError(
        `host ${hostId} still has ${placed.length} sandbox(es); drain it or pass force=true`,
      );
      throw new ServiceError(err.code, err.message, { details: { sandboxIds: placed.map((s) => s.id) } });
    }
    if (placed.length > 0) {
      const now = ctx.now();
      await tx
        .update(sandboxes)
        .set({ state: "stopped", stopReason: "lost", stoppedAt: now, updatedAt: now })
        .where(
          inArray(
            sandboxes.id,
            placed.map((s) => s.id),
          ),
        );
      await tx.insert(sandboxEvents).values(
        placed.map((s) => ({
          sandboxId: s.id,
          teamId: s.teamId,
          type: "stopped",
          fromState: s.state,
          toState: "stopped",
          detail: { reason: "lost", cause: "host deleted" },
        })),
      );
      for (const s of placed) {
        await recordSandboxChange(tx, {
          teamId: s.teamId,
          sandboxId: s.id,
          hostId,
          fromState: s.state,
          toState: "stopped",
          stopReason: "lost",
          detail: { cause: "host deleted" },
          at: now,
        });
      }
    }
    await recordAudit(
      ctx,
      {
        action: "host.delete",
        objectType: "host",
        objectId: hostId,
        details: { force: options.force, sandboxesLost: placed.length },
      },
      tx,
    );
    await tx.delete(hosts).where(eq(hosts.id, hostId));
  });
  ctx.logger.info("host deleted", { hostId, force: options.force });
}
