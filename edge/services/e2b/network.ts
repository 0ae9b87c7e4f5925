import type { TeamContext } from "../context.js";
import { NotFoundError } from "../errors.js";
import { loadSandbox } from "../sandboxes/load.js";
import { type UpdateNetworkInput, updateSandboxNetwork } from "../sandboxes/network.js";
import type { SandboxView } from "../sandboxes/view.js";
import { e2bState } from "./mapping.js";

/**
 * E2B's `PUT /sandboxes/{id}/network`: a sandbox that E2B would not show (stopped, failed, still
 * being created) is not found, as on E2B; otherwise Wrenn's update (rules replaced whole).
 */
export async function updateE2bSandboxNetwork(
  ctx: TeamContext,
  sandboxId: string,
  input: UpdateNetworkInput,
): Promise<SandboxView> {
  const row = await loadSandbox(ctx, sandboxId);
  if (e2bState(row.state) === undefined) throw new NotFoundError("sandbox", sandboxId);
  return updateSandboxNetwork(ctx, sandboxId, input);
}
