import type { TeamContext } from "../context.js";
import { BadRequestError, ConflictError, NotFoundError, ServiceError } from "../errors.js";
import { getEnvdAccessToken, getTrafficAccessToken } from "../sandboxes/get.js";
import { loadSandbox } from "../sandboxes/load.js";
import { resumeSandbox } from "../sandboxes/resume.js";
import { setSandboxTimeout } from "../sandboxes/set-timeout.js";
import { type SandboxView, toSandboxView } from "../sandboxes/view.js";
import { settlePollMs, settleTimeoutMs, sleep, transitionalStates } from "./settle.js";

/** A sandbox an SDK connected to. */
export interface ConnectedSandbox {
  sandbox: SandboxView;
  envdAccessToken: string;
  /** The token its ports require, or null when they are public (E2B's `allowPublicTraffic`). */
  trafficAccessToken: string | null;
  /** True when the sandbox was paused and this call resumed it. */
  resumed: boolean;
}

async function tokens(ctx: TeamContext, sandboxId: string) {
  return {
    envdAccessToken: await getEnvdAccessToken(ctx, sandboxId),
    trafficAccessToken: await getTrafficAccessToken(ctx, sandboxId),
  };
}

/**
 * E2B's connect: a paused sandbox is resumed with a timeout of `timeoutSec` from now; a running one
 * keeps running and its end time is only ever extended to now + `timeoutSec`, never shortened.
 * Sandboxes in transition are waited for; stopped ones are not found.
 */
export async function connectSandbox(
  ctx: TeamContext,
  sandboxId: string,
  input: {
    timeoutSec: number;
    /**
     * E2B's `memory` (the SDK's `onResume`): false asks for a fresh boot from the files alone. Wrenn
     * does that only for a sandbox paused without memory (where it is what resume does anyway); for
     * one paused with memory it refuses rather than silently restoring the memory, as E2B does where
     * the capability is off.
     */
    memory?: boolean | undefined;
  },
): Promise<ConnectedSandbox> {
  const deadline = Date.now() + settleTimeoutMs;
  for (;;) {
    const row = await loadSandbox(ctx, sandboxId);
    if (row.state === "stopped" || row.state === "error") throw new NotFoundError("sandbox", sandboxId);
    if (row.state === "missing") {
      throw new ServiceError("AGENT_UNAVAILABLE", `sandbox ${sandboxId} is missing: its host is not answering`);
    }
    if (row.state === "paused") {
      if (input.memory === false && !row.pausedWithoutMemory) {
        throw new BadRequestError(
          "memory=false (onResume: 'reboot') is not supported for a sandbox paused with its memory; connect without it to restore the memory",
          { memory: "unsupported for a sandbox paused with memory" },
        );
      }
      try {
        const sandbox = await resumeSandbox(ctx, sandboxId, { timeoutSec: input.timeoutSec });
        return { sandbox, ...(await tokens(ctx, sandboxId)), resumed: true };
      } catch (err) {
        if (!(err instanceof ConflictError)) throw err;
        // A concurrent connect or auto-resume is resuming it; wait and look again.
      }
    } else if (row.state === "running") {
      const wanted = ctx.now().getTime() + input.timeoutSec * 1000;
      const extends_ = row.endAt !== null && row.endAt.getTime() < wanted;
      const sandbox = extends_
        ? await setSandboxTimeout(ctx, sandboxId, { timeoutSec: input.timeoutSec })
        : toSandboxView(row);
      // Its end time came as this call reached the host, which paused it: resume it on the next turn.
      if (sandbox.state !== "paused") return { sandbox, ...(await tokens(ctx, sandboxId)), resumed: false };
      continue;
    } else if (!transitionalStates.has(row.state)) {
      throw new ConflictError(`sandbox ${sandboxId} is ${row.state}`);
    }
    if (Date.now() > deadline) {
      throw new ConflictError(`sandbox ${sandboxId} is still ${row.state}; try again`);
    }
    await sleep(settlePollMs);
  }
}
