import { eq, sql } from "drizzle-orm";
import { type HostStatus, hosts } from "../../db/schema/index.js";
import { recordAudit } from "../audit/record.js";
import type { ServiceContext } from "../context.js";
import { NotFoundError } from "../errors.js";
import { recordEvent } from "../events/record.js";
import { type HostView, toHostView } from "./view.js";

/**
 * Sets a host's status: `draining` stops new placements (running sandboxes stay), `active` takes
 * new sandboxes again.
 */
export async function setHostStatus(ctx: ServiceContext, hostId: string, status: HostStatus): Promise<HostView> {
  const row = await ctx.db.transaction(async (tx) => {
    const [before] = await tx.select({ status: hosts.status }).from(hosts).where(eq(hosts.id, hostId)).for("update");
    if (!before) throw new NotFoundError("host", hostId);
    const [updated] = await tx
      .update(hosts)
      .set({ status, updatedAt: ctx.now(), version: sql`${hosts.version} + 1` })
      .where(eq(hosts.id, hostId))
      .returning();
    if (!updated) throw new NotFoundError("host", hostId);
    await recordAudit(
      ctx,
      {
        action: `host.${status === "draining" ? "drain" : "activate"}`,
        objectType: "host",
        objectId: hostId,
        details: { from: before.status, to: status },
      },
      tx,
    );
    if (before.status !== status && (status === "draining" || status === "active")) {
      await recordEvent(tx, {
        teamId: null,
        type: status === "draining" ? "host.drained" : "host.up",
        hostId,
        data: { fromStatus: before.status, toStatus: status },
      });
    }
    return updated;
  });
  ctx.logger.info("host status set", { hostId, status });
  return toHostView(row);
}
