import { SandboxState } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import { agentErrorToServiceError, agentTimeouts } from "../../clients/agent.js";
import type { SandboxRow, TimeoutActionName } from "../../db/schema/index.js";
import { dateOrNull, timeoutActionToAgent } from "../agent-mapping.js";
import type { TeamContext } from "../context.js";
import { BadRequestError, ConflictError } from "../errors.js";
import { snapshotBytesOf } from "../reconcile/plan.js";
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
  /** Whether a pause at the timeout keeps memory; unset keeps the current choice. */
  keepMemory?: boolean;
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
  const onTimeout = input.onTimeout ?? placed.sandbox.onTimeout;
  if (input.keepMemory === false && (onTimeout !== "pause" || placed.sandbox.autoResume)) {
    throw new BadRequestError("keepMemory=false needs onTimeout=pause and a sandbox without autoResume", {
      keepMemory: onTimeout !== "pause" ? "needs onTimeout=pause" : "conflicts with autoResume",
    });
  }
  let res: Awaited<ReturnType<typeof placed.agent.setTimeout>>;
  try {
    res = await placed.agent.setTimeout(
      {
        sandboxId,
        timeoutSec: input.timeoutSec,
        timeoutAction: input.onTimeout ? timeoutActionToAgent(input.onTimeout) : undefined,
        timeoutKeepMemory: input.keepMemory,
      },
      { timeoutMs: agentTimeouts.default },
    );
  } catch (err) {
    throw agentErrorToServiceError(err, "set timeout");
  }
  // The host may have run the timeout action just before this call reached it (its timer fired):
  // then it reports the sandbox paused, and the row says so too.
  const pausedOnHost = res.sandbox?.state === SandboxState.PAUSED;
  let row: SandboxRow | null = placed.sandbox;
  for (let attempt = 0; attempt < 5 && row; attempt++) {
    const paused = row.state === "paused" || (row.state === "running" && pausedOnHost);
    const updated = await compareAndSet(
      ctx.db,
      row,
      {
        timeoutSec: input.timeoutSec,
        ...(input.onTimeout ? { onTimeout: input.onTimeout } : {}),
        ...(input.keepMemory !== undefined ? { keepMemory: input.keepMemory } : {}),
        ...(paused && res.sandbox
          ? {
              state: "paused" as const,
              pausedWithoutMemory: res.sandbox.pausedWithoutMemory,
              snapshotBytes: snapshotBytesOf(res.sandbox),
            }
          : {}),
        endAt: paused ? null : dateOrNull(res.sandbox?.endAt),
      },
      {
        type: "timeout_set",
        detail: { timeoutSec: input.timeoutSec, onTimeout: input.onTimeout, keepMemory: input.keepMemory },
      },
      ctx.now(),
    );
    if (updated) return toSandboxView(updated);
    row = await reloadSandbox(ctx.db, sandboxId);
  }
  throw new ConflictError(`sandbox ${sandboxId} kept changing; try again`);
}
