import type { Logger } from "../logger.js";

/** A running periodic task; `stop` waits for a run in progress to end. */
export interface PeriodicTask {
  stop(): Promise<void>;
}

/**
 * Runs `run` every `intervalMs` on Node (Workers run the same work from their cron trigger): the next
 * run is scheduled when the previous one ends, so runs never overlap in one process (leases keep
 * processes apart where that matters). A failing run is logged as `failure` and the task goes on; the
 * timer is unref'd so it never keeps the process alive by itself.
 */
export function startPeriodic(options: {
  intervalMs: number;
  run: () => Promise<unknown>;
  logger: Logger;
  /** The log message of a failed run. */
  failure: string;
  /** How loud a failed run is (default error). */
  level?: "error" | "warn";
}): PeriodicTask {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> = Promise.resolve();
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(tick, options.intervalMs);
    if (typeof timer === "object" && timer !== null && "unref" in timer) timer.unref();
  };
  const tick = () => {
    timer = undefined;
    if (stopped) return;
    running = options
      .run()
      .then(
        () => {},
        (err: unknown) => options.logger[options.level ?? "error"](options.failure, { err }),
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
