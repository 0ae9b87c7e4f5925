import { agentTimeouts } from "../../clients/agent.js";
import { dateOrNull, stateFromAgent } from "../agent-mapping.js";
import type { TeamContext } from "../context.js";
import { admitRunning, checkTimeoutQuota, effectiveQuotas, lockTeam, sandboxUsage } from "../teams/quotas.js";
import { runLifecycleStep } from "./lifecycle.js";
import type { SandboxView } from "./view.js";

/**
 * Resumes a paused sandbox. Without `timeoutSec` it gets back the time it had left when it paused;
 * with it, a new timeout from now (within the team's timeout limits). Resuming brings a sandbox back
 * to running, so it passes the team's running quotas in the same locked transaction as a create.
 */
export async function resumeSandbox(
  ctx: TeamContext,
  sandboxId: string,
  input: { timeoutSec?: number },
): Promise<SandboxView> {
  return runLifecycleStep(ctx, sandboxId, {
    verb: "resume",
    from: "paused",
    via: "resuming",
    admit: async (tx, sandbox) => {
      const team = await lockTeam(tx, sandbox.teamId);
      const quotas = effectiveQuotas(team.quotas);
      if (input.timeoutSec !== undefined) checkTimeoutQuota(quotas, input.timeoutSec);
      admitRunning(quotas, await sandboxUsage(tx, sandbox.teamId), sandbox);
    },
    call: async ({ agent }) => {
      const res = await agent.resumeSandbox(
        { sandboxId, timeoutSec: input.timeoutSec },
        { timeoutMs: agentTimeouts.lifecycle },
      );
      return {
        state: res.sandbox ? stateFromAgent(res.sandbox.state) : "running",
        endAt: dateOrNull(res.sandbox?.endAt),
        snapshotBytes: 0,
        pausedWithoutMemory: false,
        ...(input.timeoutSec !== undefined ? { timeoutSec: input.timeoutSec } : {}),
      };
    },
  });
}
