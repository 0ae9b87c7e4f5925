import { agentTimeouts } from "../../clients/agent.js";
import { stateFromAgent } from "../agent-mapping.js";
import type { TeamContext } from "../context.js";
import { runLifecycleStep } from "./lifecycle.js";
import type { SandboxView } from "./view.js";

/** Pauses a running sandbox; paused time does not count against its timeout. A paused one answers CONFLICT. */
export async function pauseSandbox(ctx: TeamContext, sandboxId: string): Promise<SandboxView> {
  return runLifecycleStep(ctx, sandboxId, {
    verb: "pause",
    from: "running",
    via: "pausing",
    call: async ({ agent }) => {
      const res = await agent.pauseSandbox({ sandboxId }, { timeoutMs: agentTimeouts.lifecycle });
      return { state: res.sandbox ? stateFromAgent(res.sandbox.state) : "paused", endAt: null };
    },
  });
}
