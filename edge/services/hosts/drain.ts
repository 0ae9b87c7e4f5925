import { eq, sql } from "drizzle-orm";
import { type HostStatus, hosts } from "../../db/schema/index.js";
import type { ServiceContext } from "../context.js";
import { NotFoundError } from "../errors.js";
import { type HostView, toHostView } from "./view.js";

/**
 * Sets a host's status: `draining` stops new placements (running sandboxes stay), `active` takes
 * new sandboxes again.
 */
export async function setHostStatus(ctx: ServiceContext, hostId: string, status: HostStatus): Promise<HostView> {
  const [row] = await ctx.db
    .update(hosts)
    .set({ status, updatedAt: ctx.now(), version: sql`${hosts.version} + 1` })
    .where(eq(hosts.id, hostId))
    .returning();
  if (!row) throw new NotFoundError("host", hostId);
  ctx.logger.info("host status set", { hostId, status });
  return toHostView(row);
}
