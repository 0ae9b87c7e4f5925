import type { Logger } from "../../logger.js";

/** A running periodic sweep; `stop` waits for a sweep in progress to finish. */
export interface ReconcileLoop {
  stop(): Promise<void>;
}

/**
 * Runs `sweep` every `intervalMs` on Node (Workers use a cron trigger instead). The next sweep is
 * scheduled when the previous one ends, so sweeps never overlap in one process; the lease keeps
 * them apart across processes. A failing sweep is logged and the loop goes on. The timer is
 * unref'd so it never keeps the process alive by itself.
 */
export function startReconcileLoop(options: {
  intervalMs: number;
  sweep: () => Promise<unknown>;
  logger: Logger;
}): ReconcileLoop {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    timer = undefined;
    if (stopped) return;
    running = options
      .sweep()
      .then(
        () => {},
        (err: unknown) => options.logger.error("reconcile sweep failed", { err }),
      )
      .finally(schedule);
  };
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(tick, options.intervalMs);
    if (typeof timer === "object" && timer !== null && "unref" in timer) timer.unref();
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
