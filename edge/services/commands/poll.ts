import { and, eq, inArray, sql } from "drizzle-orm";
import { commands, hosts, sandboxes } from "../../db/schema/index.js";
import type { ServiceContext } from "../context.js";
import { agentFor } from "../hosts/target.js";
import { collectHostTelemetry } from "../telemetry/collect.js";

/** Hosts one pass pulls at most. */
const MAX_HOSTS = 32;

/**
 * Pulls telemetry from every host that runs a sandbox with a background command still owed its end
 * (callback state `pending`), so callbacks do not wait for the next reconcile sweep (30 s by
 * default). A host pulled less than a second ago (by a read or the sweep) is skipped. Never throws
 * for one host: the sweep pulls again anyway. Returns the hosts pulled.
 */
export async function pullForPendingCallbacks(ctx: ServiceContext): Promise<number> {
  const pending = await ctx.db
    .selectDistinct({ hostId: sandboxes.hostId })
    .from(commands)
    .innerJoin(sandboxes, eq(sandboxes.id, commands.sandboxId))
    .where(
      and(
        eq(commands.callbackState, "pending"),
        inArray(sandboxes.state, ["running", "pausing", "resuming"]),
        sql`${sandboxes.hostId} is not null`,
      ),
    )
    .limit(MAX_HOSTS);
  const ids = pending.map((p) => p.hostId).filter((id): id is string => id !== null);
  if (ids.length === 0) return 0;
  const rows = await ctx.db.select().from(hosts).where(inArray(hosts.id, ids));
  let pulled = 0;
  await Promise.all(
    rows.map(async (host) => {
      try {
        await collectHostTelemetry(ctx, await agentFor(ctx, host), host.id, {
          timeoutMs: 3_000,
          maxPages: 4,
          freshMs: 1_000,
        });
        pulled++;
      } catch (err) {
        ctx.logger.debug("pulling telemetry for pending callbacks failed; the sweep pulls again", {
          hostId: host.id,
          error: err instanceof Error ? err.message : String(err),
        });
      }
    }),
  );
  return pulled;
}
