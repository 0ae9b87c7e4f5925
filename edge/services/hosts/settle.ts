import { and, eq, inArray } from "drizzle-orm";
import { activeSandboxStates, sandboxes } from "../../db/schema/index.js";
import { type ServiceContext, teamContext } from "../context.js";
import { destroySandbox } from "../sandboxes/destroy.js";
import { pauseSandbox } from "../sandboxes/pause.js";

/** What settling did to one sandbox. */
export type SettledSandbox =
  | { sandboxId: string; outcome: "destroyed" | "paused" }
  | { sandboxId: string; outcome: "failed"; message: string };

/** Options of `settleHostSandboxes`. */
export interface SettleHostOptions {
  /** Pause running sandboxes (and leave paused ones) instead of destroying every one. */
  keep: boolean;
  /** Called as each sandbox is settled, so a caller can report progress. */
  onSettled?: (settled: SettledSandbox) => void;
}

/**
 * Settles every sandbox the database places on `hostId` before the host goes away (`wrenn up` on
 * Ctrl-C): destroys each, or with `keep` pauses the running ones, through the same services the API
 * uses, so the database stays true. Each runs on behalf of its own team, concurrently; one failure
 * does not stop the others and is reported in the result.
 */
export async function settleHostSandboxes(
  ctx: ServiceContext,
  hostId: string,
  options: SettleHostOptions,
): Promise<SettledSandbox[]> {
  const rows = await ctx.db
    .select({ id: sandboxes.id, teamId: sandboxes.teamId, state: sandboxes.state })
    .from(sandboxes)
    .where(and(eq(sandboxes.hostId, hostId), inArray(sandboxes.state, [...activeSandboxStates])));
  const settled = await Promise.all(
    rows.map(async (row): Promise<SettledSandbox | undefined> => {
      const team = teamContext(ctx, { teamId: row.teamId, keyId: ctx.requestId, isAdmin: true, scopes: [] });
      let result: SettledSandbox | undefined;
      try {
        if (!options.keep) {
          await destroySandbox(team, row.id);
          result = { sandboxId: row.id, outcome: "destroyed" };
        } else if (row.state === "running") {
          await pauseSandbox(team, row.id);
          result = { sandboxId: row.id, outcome: "paused" };
        }
      } catch (err) {
        result = { sandboxId: row.id, outcome: "failed", message: err instanceof Error ? err.message : String(err) };
      }
      if (result) options.onSettled?.(result);
      return result;
    }),
  );
  return settled.filter((s) => s !== undefined);
}
