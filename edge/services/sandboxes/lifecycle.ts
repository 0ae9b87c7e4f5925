import { agentErrorToServiceError } from "../../clients/agent.js";
import type { Database } from "../../db/client.js";
import type { SandboxRow, SandboxStateName } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { ConflictError } from "../errors.js";
import { loadPlacedSandbox } from "./load.js";
import { compareAndSet, type SandboxPatch } from "./transition.js";
import { type SandboxView, toSandboxView } from "./view.js";

/** One step of a pause or resume: from a settled state, through a transitional one, to a settled one. */
export interface LifecycleStep {
  verb: "pause" | "resume";
  from: SandboxStateName;
  via: SandboxStateName;
  /**
   * Runs inside the transaction that marks `from → via`, before the mark; throws to refuse (the
   * team's quotas). Sees the sandbox as it was read.
   */
  admit?(tx: Database, sandbox: SandboxRow): Promise<void>;
  /** Calls the agent; returns the columns to record on success. */
  call(placed: Awaited<ReturnType<typeof loadPlacedSandbox>>): Promise<SandboxPatch>;
}

/**
 * Runs a pause or resume: compare-and-set `from → via` (so two concurrent calls cannot both act),
 * call the agent, then `via → <settled>`; when the agent refuses, the row goes back to `from`.
 */
export async function runLifecycleStep(ctx: TeamContext, sandboxId: string, step: LifecycleStep): Promise<SandboxView> {
  const placed = await loadPlacedSandbox(ctx, sandboxId);
  const current = placed.sandbox;
  if (current.state !== step.from) {
    throw new ConflictError(`sandbox ${sandboxId} is ${current.state}; ${step.verb} needs it ${step.from}`);
  }
  const admit = step.admit;
  const marked = await compareAndSet(
    ctx.db,
    current,
    { state: step.via },
    { type: step.via },
    ctx.now(),
    admit ? (tx) => admit(tx, current) : undefined,
  );
  if (!marked) throw new ConflictError(`sandbox ${sandboxId} changed while being ${step.verb}d; try again`);
  let patch: SandboxPatch;
  try {
    patch = await step.call({ ...placed, sandbox: marked });
  } catch (err) {
    const failure = agentErrorToServiceError(err, `${step.verb} sandbox`);
    await compareAndSet(
      ctx.db,
      marked,
      { state: step.from },
      { type: `${step.verb}_failed`, detail: { code: failure.code } },
      ctx.now(),
    );
    throw failure;
  }
  const settled: SandboxRow | null = await compareAndSet(
    ctx.db,
    marked,
    patch,
    { type: String(patch.state ?? step.verb) },
    ctx.now(),
  );
  if (!settled) throw new ConflictError(`sandbox ${sandboxId} changed while being ${step.verb}d`);
  return toSandboxView(settled);
}
