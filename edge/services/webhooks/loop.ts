import type { Logger } from "../../logger.js";
import { type PeriodicTask, startPeriodic } from "../periodic.js";

/** A running delivery loop; `stop` waits for a run in progress to end. */
export type DeliveryLoop = PeriodicTask;

/**
 * Runs `run` every `intervalMs` on Node (Workers run it from the cron trigger); runs never overlap in a
 * process, and leases keep processes apart.
 */
export function startDeliveryLoop(options: {
  intervalMs: number;
  run: () => Promise<unknown>;
  logger: Logger;
}): DeliveryLoop {
  return startPeriodic({ ...options, failure: "webhook delivery run failed" });
}
