import { agentErrorToServiceError, agentTimeouts } from "../../clients/agent.js";
import type { SandboxRow, TimeoutActionName } from "../../db/schema/index.js";
import { dateOrNull, timeoutActionToAgent } from "../agent-mapping.js";
import type { TeamContext } from "../context.js";
import { ConflictError } from "../errors.js";
import { checkTimeoutQuota, loadTeamPolicy } from "../teams/quotas.js";
import { loadPlacedSandbox } from "./load.js";
import { compareAndSet, reloadSandbox } from "./transition.js";
import { type SandboxView, toSandboxView } from "./view.js";

/** Input of `setSandboxTimeout`. */
export interface SetTimeoutInput {
  /** Seconds from now; 0 removes the timeout. */
  timeoutSec: number;
  /** New timeout action; unset keeps the current one. */
  onTimeout?: TimeoutActionName;
}

/**
 * Moves a running or paused sandbox's end time to now + `timeoutSec` (on a paused one, from its
 * resume), within the team's timeout limits (`maxTimeoutSec`, and 0 only with `allowNoTimeout`).
 */
export async function setSandboxTimeout(
  ctx: TeamContext,
  sandboxId: string,
  input: SetTimeoutInput,
): Promise<SandboxView> {
  checkTimeoutQuota((await loadTeamPolicy(ctx.db, ctx.principal.teamId)).quotas, input.timeoutSec);
  const placed = await loadPlacedSandbox(ctx, sandboxId);
  if (placed.sandbox.state !== "running" && placed.sandbox.state !== "paused") {
    throw new ConflictError(
      `sandbox ${sandboxId} is ${placed.sandbox.state}; its timeout can change only while running or paused`,
    );
  }
  let res: Awaited<ReturnType<typeof placed.agent.setTimeout>>;
  try {
    res = await placed.agent.setTimeout(
      {
        sandboxId,
        timeoutSec: input.timeoutSec,
        timeoutAction: input.onTimeout ? timeoutActionToAgent(input.onTimeout) : undefined,
      },
      { timeoutMs: agentTimeouts.default },
    );
  } catch (err) {
    throw agentErrorToServiceError(err, "set timeout");
  }
  let row: SandboxRow | null = placed.sandbox;
  for (let attempt = 0; attempt < 5 && row; attempt++) {
    const updated = await compareAndSet(
      ctx.db,
      row,
      {
        timeoutSec: input.timeoutSec,
        ...(input.onTimeout ? { onTimeout: input.onTimeout } : {}),
        endAt: row.state === "paused" ? null : dateOrNull(res.sandbox?.endAt),
      },
      { type: "timeout_set", detail: { timeoutSec: input.timeoutSec, onTimeout: input.onTimeout } },
      ctx.now(),
    );
    if (updated) return toSandboxView(updated);
    row = await reloadSandbox(ctx.db, sandboxId);
  }
  throw new ConflictError(`sandbox ${sandboxId} kept changing; try again`);
}
