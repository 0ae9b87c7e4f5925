import { asc } from "drizzle-orm";
import { hosts } from "../../db/schema/index.js";
import type { ServiceContext } from "../context.js";
import { randomString } from "../ids.js";
import { retentionDuringSweep } from "../telemetry/retention.js";
import { emptyCounts, emptyOutcome, type HostOutcome, reconcileHost } from "./host.js";
import { acquireLease, reconcileLeaseName, releaseLease } from "./lease.js";
import { mapWithLimit } from "./limit.js";
import { type ReconcileOptions, resolveReconcileOptions } from "./options.js";
import type { ReconcileRule } from "./plan.js";

/** What a sweep did; returned to the caller and logged as one line. */
export interface ReconcileSummary {
  /** False when another sweep held the lease, so this one did nothing. */
  ran: boolean;
  /** Hosts registered when the sweep started. */
  hosts: number;
  /** Hosts that answered ListSandboxes. */
  hostsSeen: number;
  /** Hosts that did not answer (unreachable, timed out, refused the token). */
  hostsFailed: number;
  /** Hosts left for the next sweep because this one ran out of time (see `leaseTtlMs`). */
  hostsSkipped: number;
  /** Hosts that turned `unhealthy` in this sweep. */
  hostsUnhealthy: string[];
  /** Hosts that were `unhealthy` and answered again. */
  hostsRecovered: string[];
  /** Sandbox rows changed (or host sandboxes destroyed, for `orphaned`), by rule. */
  changed: Record<ReconcileRule, number>;
  /** Sandboxes destroyed on hosts (orphans, expired with action kill, stuck creates). */
  destroyedOnHost: number;
  /** Agent calls that failed; the next sweep tries again. */
  actionFailures: number;
  durationMs: number;
}

/**
 * One reconcile sweep over every registered host (DESIGN.md §5): takes the `reconcile` lease (one
 * sweep at a time across all edges), sweeps hosts with bounded concurrency and per-call deadlines,
 * gives the lease back, and logs a summary. Safe to call from Workers' `scheduled()` and from a
 * Node interval; a sweep that finds the lease taken returns at once with `ran: false`.
 */
export async function runReconcileSweep(
  ctx: ServiceContext,
  overrides: Partial<ReconcileOptions> = {},
): Promise<ReconcileSummary> {
  const options = resolveReconcileOptions(overrides);
  const started = performance.now();
  const holder = `sweep_${randomString(16, "abcdefghijklmnopqrstuvwxyz0123456789")}`;
  const summary: ReconcileSummary = {
    ran: false,
    hosts: 0,
    hostsSeen: 0,
    hostsFailed: 0,
    hostsSkipped: 0,
    hostsUnhealthy: [],
    hostsRecovered: [],
    changed: emptyCounts(),
    destroyedOnHost: 0,
    actionFailures: 0,
    durationMs: 0,
  };
  const log = ctx.logger.child({ sweep: holder });
  if (!(await acquireLease(ctx.db, reconcileLeaseName, holder, options.leaseTtlMs))) {
    summary.durationMs = Math.round(performance.now() - started);
    log.info("reconcile sweep skipped: another sweep holds the lease");
    return summary;
  }
  summary.ran = true;
  const sweepCtx: ServiceContext = { ...ctx, logger: log, requestId: holder };
  try {
    const all = await ctx.db.select().from(hosts).orderBy(asc(hosts.id));
    summary.hosts = all.length;
    // Start no host and no agent call that could outlast the lease, so two sweeps never overlap:
    // the last one started still ends (its deadlines) with a few seconds of lease to spare.
    const deadline = started + options.leaseTtlMs - options.hostTimeoutMs - options.actionTimeoutMs - 5_000;
    const outcomes = await mapWithLimit(all, options.hostConcurrency, async (host) => {
      if (performance.now() > deadline) return undefined;
      return reconcileHost(sweepCtx, host, options, deadline).catch((err: unknown): HostOutcome => {
        // A database failure on one host must not stop the others; the next sweep retries it.
        log.error("sweeping a host failed", { hostId: host.id, err });
        return { ...emptyOutcome(host.id), error: err instanceof Error ? err.message : String(err) };
      });
    });
    for (const o of outcomes) {
      if (!o) {
        summary.hostsSkipped++;
        continue;
      }
      if (o.answered) summary.hostsSeen++;
      else summary.hostsFailed++;
      if (o.becameUnhealthy) summary.hostsUnhealthy.push(o.hostId);
      if (o.recovered) summary.hostsRecovered.push(o.hostId);
      for (const [rule, n] of Object.entries(o.changed) as [ReconcileRule, number][]) summary.changed[rule] += n;
      summary.destroyedOnHost += o.destroyedOnHost;
      summary.actionFailures += o.actionFailures;
    }
    await retentionDuringSweep(sweepCtx);
  } finally {
    await releaseLease(ctx.db, reconcileLeaseName, holder).catch((err: unknown) =>
      log.warn("releasing the reconcile lease failed; it expires on its own", { err }),
    );
  }
  summary.durationMs = Math.round(performance.now() - started);
  log.info("reconcile sweep done", { ...summary });
  return summary;
}
