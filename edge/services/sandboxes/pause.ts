import { agentTimeouts } from "../../clients/agent.js";
import { stateFromAgent } from "../agent-mapping.js";
import { recordAudit } from "../audit/record.js";
import type { TeamContext } from "../context.js";
import { admitPaused, effectiveQuotas, lockTeam, sandboxUsage } from "../teams/quotas.js";
import { runLifecycleStep } from "./lifecycle.js";
import type { SandboxView } from "./view.js";

/**
 * Pauses a running sandbox; paused time does not count against its timeout. With `keepMemory: false`
 * its processes end and only its files are kept (resume boots it afresh); a host whose runtime
 * cannot do that refuses. A paused one answers
 * CONFLICT; a team at its paused-sandbox or paused-disk quota answers QUOTA_EXCEEDED. The snapshot
 * size the agent reports is recorded, for the paused-disk quota.
 */
export async function pauseSandbox(
  ctx: TeamContext,
  sandboxId: string,
  input: { keepMemory?: boolean } = {},
): Promise<SandboxView> {
  return runLifecycleStep(ctx, sandboxId, {
    verb: "pause",
    from: "running",
    via: "pausing",
    admit: async (tx, sandbox) => {
      const team = await lockTeam(tx, sandbox.teamId);
      admitPaused(effectiveQuotas(team.quotas), await sandboxUsage(tx, sandbox.teamId));
      await recordAudit(ctx, { action: "sandbox.pause", objectType: "sandbox", objectId: sandboxId }, tx);
    },
    call: async ({ agent }) => {
      const res = await agent.pauseSandbox(
        { sandboxId, keepMemory: input.keepMemory },
        { timeoutMs: agentTimeouts.lifecycle },
      );
      const snapshotBytes = (res.sandbox?.snapshotFiles ?? []).reduce((sum, f) => sum + Number(f.sizeBytes), 0);
      return {
        state: res.sandbox ? stateFromAgent(res.sandbox.state) : "paused",
        endAt: null,
        snapshotBytes,
        pausedWithoutMemory: res.sandbox?.pausedWithoutMemory ?? input.keepMemory === false,
      };
    },
  });
}
