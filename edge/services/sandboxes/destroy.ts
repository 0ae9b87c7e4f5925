import { Code, ConnectError } from "@connectrpc/connect";
import { eq } from "drizzle-orm";
import { agentErrorToServiceError, agentTimeouts, isAgentAnswer } from "../../clients/agent.js";
import { hosts, type SandboxRow } from "../../db/schema/index.js";
import { recordAudit } from "../audit/record.js";
import type { TeamContext } from "../context.js";
import { agentFor } from "../hosts/target.js";
import { loadSandbox } from "./load.js";
import { compareAndSet, reloadSandbox } from "./transition.js";

const maxAttempts = 5;

/**
 * Destroys a sandbox and records it `stopped` (reason `killed`). Destroying a stopped sandbox is a
 * no-op. When the host cannot be reached the row is still marked stopped: the reconcile sweep
 * destroys sandboxes that run on a host but are stopped in the database.
 */
export async function destroySandbox(ctx: TeamContext, sandboxId: string): Promise<void> {
  let row: SandboxRow | null = await loadSandbox(ctx, sandboxId);
  if (row.state === "stopped") return;
  let killedOnHost = false;
  // A sweep that runs between the agent's destroy and our write sees the sandbox gone and records it
  // `lost`; this destroy knows better, so that reason is overwritten with `killed`.
  const settled = (r: SandboxRow) => r.state === "stopped" && !(killedOnHost && r.stopReason === "lost");
  if (row.hostId) {
    const [host] = await ctx.db.select().from(hosts).where(eq(hosts.id, row.hostId));
    if (host) {
      const agent = await agentFor(ctx, host);
      try {
        await agent.destroySandbox({ sandboxId }, { timeoutMs: agentTimeouts.lifecycle });
        killedOnHost = true;
      } catch (err) {
        const notThere = ConnectError.from(err).code === Code.NotFound;
        if (!notThere && isAgentAnswer(err)) throw agentErrorToServiceError(err, "destroy sandbox");
        if (!notThere) ctx.logger.warn("host unreachable during destroy; the sweep will clean up", { sandboxId, err });
      }
    }
  }
  for (let attempt = 0; attempt < maxAttempts && row && !settled(row); attempt++) {
    const now = ctx.now();
    const done = await compareAndSet(
      ctx.db,
      row,
      { state: "stopped", stopReason: "killed", stoppedAt: now, endAt: null },
      { type: "stopped", detail: { reason: "killed" } },
      now,
    );
    if (done) break;
    row = await reloadSandbox(ctx.db, sandboxId);
  }
  await recordAudit(ctx, { action: "sandbox.kill", objectType: "sandbox", objectId: sandboxId });
  ctx.logger.info("sandbox destroyed", { sandboxId });
}
