import type { Logger } from "../../logger.js";

/** A running delivery loop; `stop` waits for a run in progress to end. */
export interface DeliveryLoop {
  stop(): Promise<void>;
}

/**
 * Runs `run` every `intervalMs` on Node (Workers run it from the cron trigger): the next run is
 * scheduled when the previous one ends, so runs never overlap in a process (leases keep processes
 * apart). A failing run is logged and the loop goes on; the timer never keeps the process alive.
 */
export function startDeliveryLoop(options: {
  intervalMs: number;
  run: () => Promise<unknown>;
  logger: Logger;
}): DeliveryLoop {
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
        (err: unknown) => options.logger.error("webhook delivery run failed", { err }),
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
