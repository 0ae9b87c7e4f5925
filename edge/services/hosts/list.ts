import { asc, count, inArray, isNotNull } from "drizzle-orm";
import { activeSandboxStates, hosts, sandboxes } from "../../db/schema/index.js";
import type { ServiceContext } from "../context.js";
import { type HostView, toHostView } from "./view.js";

/** Every registered host, oldest first, with how many sandboxes each holds. */
export async function listHosts(ctx: ServiceContext): Promise<HostView[]> {
  const rows = await ctx.db.select().from(hosts).orderBy(asc(hosts.createdAt), asc(hosts.id));
  const counts = await ctx.db
    .select({ hostId: sandboxes.hostId, n: count() })
    .from(sandboxes)
    .where(inArray(sandboxes.state, [...activeSandboxStates]))
    .groupBy(sandboxes.hostId)
    .having(isNotNull(sandboxes.hostId));
  const byHost = new Map(counts.map((c) => [c.hostId, c.n]));
  return rows.map((row) => toHostView(row, byHost.get(row.id) ?? 0));
}
