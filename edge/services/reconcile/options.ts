import type { Env } from "../../env.js";

/** Tunables of the reconcile sweep. Every field has a production default; tests shorten them. */
export interface ReconcileOptions {
  /**
   * How long a sandbox may run on a host while the database does not know it (or has it stopped)
   * before the sweep destroys it. Covers creates in flight and clock skew between edge and agent.
   */
  orphanGraceMs: number;
  /**
   * How long a sandbox may stay `pending` or `starting` (and `pausing` or `resuming`) before the
   * sweep settles it. Longer than the slowest create the agent allows (TCG boots take minutes).
   */
  stuckAfterMs: number;
  /** Failed sweeps in a row after which a host becomes `unhealthy` and its sandboxes `missing`. */
  unhealthyAfterFailures: number;
  /** Hosts swept at the same time. */
  hostConcurrency: number;
  /** Agent calls (pause, destroy) in flight at once for one host. */
  actionConcurrency: number;
  /** Deadline of ListSandboxes and GetHostInfo on one host; a host slower than this counts as failed. */
  hostTimeoutMs: number;
  /** Deadline of each pause or destroy the sweep sends. */
  actionTimeoutMs: number;
  /**
   * How long the sweep's lease lasts. A sweep that dies (a Worker killed mid-run) blocks the next
   * one for at most this long; a live sweep finishes well inside it.
   */
  leaseTtlMs: number;
}

/** Production defaults (DESIGN.md §5). */
export const defaultReconcileOptions: ReconcileOptions = {
  orphanGraceMs: 60_000,
  stuckAfterMs: 600_000,
  unhealthyAfterFailures: 3,
  hostConcurrency: 8,
  actionConcurrency: 4,
  hostTimeoutMs: 10_000,
  actionTimeoutMs: 30_000,
  leaseTtlMs: 120_000,
};

/** Defaults overlaid with what the caller set. */
export function resolveReconcileOptions(overrides: Partial<ReconcileOptions> = {}): ReconcileOptions {
  return { ...defaultReconcileOptions, ...overrides };
}

/** The sweep's tunables from the parsed environment (the rest keep their defaults). */
export function reconcileOptionsFromEnv(
  env: Pick<Env, "WRENN_RECONCILE_ORPHAN_GRACE_SEC" | "WRENN_RECONCILE_STUCK_SEC" | "WRENN_HOST_UNHEALTHY_AFTER">,
): ReconcileOptions {
  return resolveReconcileOptions({
    orphanGraceMs: env.WRENN_RECONCILE_ORPHAN_GRACE_SEC * 1000,
    stuckAfterMs: env.WRENN_RECONCILE_STUCK_SEC * 1000,
    unhealthyAfterFailures: env.WRENN_HOST_UNHEALTHY_AFTER,
  });
}
