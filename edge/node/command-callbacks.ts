import type { Logger } from "../logger.js";
import { pullForPendingCallbacks } from "../services/commands/poll.js";
import type { ServiceContext } from "../services/context.js";
import { type PeriodicTask, startPeriodic } from "../services/periodic.js";

/**
 * The Node edge's poll for background commands owed a callback: every `intervalMs` it pulls the
 * telemetry of the hosts that run them (edge/services/commands/poll.ts), so a callback leaves within
 * about the agent's sampling interval (AGENT_METRICS_INTERVAL_MS) plus this interval of the command's
 * end. Runs never overlap; the timer never keeps the process alive.
 */
export function startCommandCallbackPoll(options: {
  intervalMs: number;
  logger: Logger;
  context: () => ServiceContext;
}): PeriodicTask {
  return startPeriodic({
    intervalMs: options.intervalMs,
    run: () => pullForPendingCallbacks(options.context()),
    logger: options.logger,
    failure: "polling for pending command callbacks failed",
    level: "warn",
  });
}
