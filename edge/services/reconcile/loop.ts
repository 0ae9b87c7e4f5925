import type { Logger } from "../../logger.js";
import { type PeriodicTask, startPeriodic } from "../periodic.js";

/** A running periodic sweep; `stop` waits for a sweep in progress to finish. */
export type ReconcileLoop = PeriodicTask;

/**
 * Runs `sweep` every `intervalMs` on Node (Workers use a cron trigger instead); sweeps never overlap in
 * one process, and the lease keeps them apart across processes.
 */
export function startReconcileLoop(options: {
  intervalMs: number;
  sweep: () => Promise<unknown>;
  logger: Logger;
}): ReconcileLoop {
  return startPeriodic({
    intervalMs: options.intervalMs,
    run: options.sweep,
    logger: options.logger,
    failure: "reconcile sweep failed",
  });
}
