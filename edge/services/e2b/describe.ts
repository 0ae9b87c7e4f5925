import type { TeamContext } from "../context.js";
import { NotFoundError } from "../errors.js";
import { loadSandbox } from "../sandboxes/load.js";
import { type SandboxView, toSandboxView } from "../sandboxes/view.js";
import { e2bState } from "./mapping.js";

/** A sandbox as the E2B surface describes it: the view plus what only E2B shows. */
export interface DescribedSandbox {
  sandbox: SandboxView;
  autoResume: boolean;
  envdAccessToken: string;
}

/**
 * One live sandbox of the caller's team. Stopped and failed sandboxes (and ones still being created)
 * are not found, as on E2B, where a killed sandbox is gone.
 */
export async function describeSandbox(ctx: TeamContext, sandboxId: string): Promise<DescribedSandbox> {
  const row = await loadSandbox(ctx, sandboxId);
  if (e2bState(row.state) === undefined) throw new NotFoundError("sandbox", sandboxId);
  return {
    sandbox: toSandboxView(row),
    autoResume: row.autoResume,
    envdAccessToken: await ctx.secrets.open(row.envdTokenSealed),
  };
}
