import type { Logger } from "../logger.js";
import { pullForPendingCallbacks } from "../services/commands/poll.js";
import type { ServiceContext } from "../services/context.js";

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
}): { stop(): Promise<void> } {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> = Promise.resolve();
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(tick, options.intervalMs);
    timer.unref();
  };
  const tick = () => {
    timer = undefined;
    if (stopped) return;
    running = pullForPendingCallbacks(options.context())
      .then(
        () => {},
        (err: unknown) => options.logger.warn("polling for pending command callbacks failed", { err }),
      )
      .finally(schedule);
  };
  schedule();
  return {
    async stop() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      await running;
    },
  };
}
