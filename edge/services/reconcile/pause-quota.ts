import { inArray } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { sandboxes } from "../../db/schema/index.js";
import { admitPaused, effectiveQuotas, lockTeam, QuotaExceededError, sandboxUsage } from "../teams/quotas.js";
import { type AppliedTransition, applyTransitions } from "./apply.js";
import type { Transition } from "./plan.js";

/**
 * Whether a transition adds a paused sandbox because a running one reached its timeout: the sweep's
 * own timeout pause (`expired` → `pausing`), or a pause the host's reaper made on its own (a running
 * row the host reports paused). A `pausing` row settling is an API pause already admitted, and a
 * `missing` row coming back paused may have been paused before its host went quiet, so neither counts.
 */
export function isTimeoutPause(t: Transition): boolean {
  return t.fromState === "running" && (t.toState === "pausing" || t.toState === "paused");
}

/**
 * A timeout pause refused by the team's paused quotas becomes what `onTimeout: "kill"` would have
 * done: the row `stopped` (reason `timeout`) and the sandbox destroyed on its host (for a sandbox the
 * host already paused, that frees its snapshot too). The row's `error` says why it was not paused.
 */
export function stopInsteadOfPause(t: Transition, refusal: QuotaExceededError): Transition {
  const { quota, limit, used } = (refusal.details ?? {}) as { quota?: string; limit?: number; used?: number };
  return {
    ...t,
    toState: "stopped",
    stopReason: "timeout",
    endAt: null,
    keepEndAt: false,
    error: `timed out with onTimeout "pause", but the team's paused quota was full (${quota} ${limit}, ${used} in use): stopped instead of paused`,
    hostAction: "destroy",
    cause: `timeout (pause refused by quota ${quota})`,
    snapshotBytes: 0,
  };
}

/**
 * Applies a sweep's transitions, holding timeout pauses to the team's paused-sandbox and paused-disk
 * quotas exactly as an API pause is held: in ONE transaction, each team row involved is locked
 * (`FOR UPDATE`, in id order, the same team-then-sandbox order as the API's admissions, so the two
 * cannot deadlock), its usage counted, every timeout pause admitted or turned into a stop, and the
 * compare-and-sets written — so a concurrent API pause or resume of the same team waits, and the
 * team never ends up over its quota. Without timeout pauses this is `applyTransitions` as before
 * (no transaction, no lock). Returns the transitions as decided and the rows that changed.
 */
export async function applyTransitionsWithPauseQuota(
  db: Database,
  transitions: readonly Transition[],
  now: Date,
): Promise<{ transitions: Transition[]; applied: AppliedTransition[] }> {
  const candidates = transitions.filter(isTimeoutPause);
  if (candidates.length === 0)
    return { transitions: [...transitions], applied: await applyTransitions(db, transitions, now) };
  return db.transaction(async (tx) => {
    const owners = await tx
      .select({ id: sandboxes.id, teamId: sandboxes.teamId })
      .from(sandboxes)
      .where(
        inArray(
          sandboxes.id,
          candidates.map((c) => c.id),
        ),
      );
    const teamOf = new Map(owners.map((o) => [o.id, o.teamId]));
    const refusals = new Map<string, QuotaExceededError>();
    for (const teamId of [...new Set(owners.map((o) => o.teamId))].sort()) {
      const quotas = effectiveQuotas((await lockTeam(tx, teamId)).quotas);
      const usage = await sandboxUsage(tx, teamId);
      for (const t of candidates) {
        if (teamOf.get(t.id) !== teamId) continue;
        try {
          admitPaused(quotas, usage);
          usage.pausedSandboxes++;
          usage.pausedDiskMb += Math.ceil((t.snapshotBytes ?? 0) / 1024 ** 2);
        } catch (err) {
          if (!(err instanceof QuotaExceededError)) throw err;
          refusals.set(t.id, err);
        }
      }
    }
    const decided = transitions.map((t) => {
      const refusal = refusals.get(t.id);
      return refusal ? stopInsteadOfPause(t, refusal) : t;
    });
    return { transitions: decided, applied: await applyTransitions(tx, decided, now) };
  });
}
