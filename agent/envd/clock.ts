import { access } from "node:fs/promises";
import type { Exec } from "./exec.js";
import type { Logger } from "./log.js";

/** Guests with a KVM PTP clock keep time through chrony; only guests without one need stepping. */
const PHC_DEVICE = "/dev/ptp0";
/** Smallest lag worth a step; below it the clock is close enough. */
const MIN_STEP_MS = 1_000;

/** Steps the system clock forward to a host-supplied time. */
export interface ClockStepper {
  /** Steps forward to `targetMs` if the clock is behind by at least a second; returns whether it stepped. */
  stepForwardTo(targetMs: number): Promise<boolean>;
}

/**
 * Creates the stepper. In debug mode (envd on a developer's or CI host) it never touches the
 * clock: the host's time is not ours to change. In a guest it steps only when there is no PHC.
 */
export function createClockStepper(opts: { debug: boolean; exec: Exec; logger: Logger }): ClockStepper {
  return {
    async stepForwardTo(targetMs) {
      if (opts.debug) return false;
      const hasPhc = await access(PHC_DEVICE).then(
        () => true,
        () => false,
      );
      if (hasPhc) return false;
      const lag = targetMs - Date.now();
      if (lag < MIN_STEP_MS) return false;
      const seconds = (targetMs / 1000).toFixed(3);
      const res = await opts.exec("date", ["-u", "-s", `@${seconds}`]);
      if (res.exitCode !== 0) {
        opts.logger.warn("could not step the clock", { stderr: res.stderr.trim(), lagMs: lag });
        return false;
      }
      opts.logger.info("stepped the clock forward", { lagMs: lag });
      return true;
    },
  };
}
