import { agentTimeouts } from "../../clients/agent.js";
import { dateOrNull, stateFromAgent } from "../agent-mapping.js";
import type { TeamContext } from "../context.js";
import { runLifecycleStep } from "./lifecycle.js";
import type { SandboxView } from "./view.js";

/**
 * Resumes a paused sandbox. Without `timeoutSec` it gets back the time it had left when it paused;
 * with it, a new timeout from now.
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
    call: async ({ agent }) => {
      const res = await agent.resumeSandbox(
        { sandboxId, timeoutSec: input.timeoutSec },
        { timeoutMs: agentTimeouts.lifecycle },
      );
      return {
        state: res.sandbox ? stateFromAgent(res.sandbox.state) : "running",
        endAt: dateOrNull(res.sandbox?.endAt),
        ...(input.timeoutSec !== undefined ? { timeoutSec: input.timeoutSec } : {}),
      };
    },
  });
}
