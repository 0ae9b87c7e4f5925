import type { Clock } from "./clock.js";

/**
 * One-shot timers (setTimeout/clearTimeout); injected so that tests fire them by moving a fake clock.
 * `fire` returns what its action returns (a promise), so a test's scheduler can wait for the action;
 * Node's timers ignore it.
 */
export interface TimerScheduler {
  set(fire: () => unknown, delayMs: number): unknown;
  clear(timer: unknown): void;
}

/** Node's timers, unref'd: a pending deadline never keeps the agent's process alive. */
export const systemTimers: TimerScheduler = {
  set: (fire, delayMs) => setTimeout(fire, delayMs).unref(),
  clear: (timer) => clearTimeout(timer as ReturnType<typeof setTimeout>),
};

/** Node's setTimeout fires at once for delays above 2^31-1 ms (~24.8 days); longer waits are chained. */
const MAX_DELAY_MS = 2 ** 31 - 1;

export interface DeadlineTimersDeps {
  clock: Clock;
  timers: TimerScheduler;
  /**
   * Called when a sandbox's end time comes. It must re-check under the sandbox's lock (the timer may
   * race a SetTimeout, a pause or a destroy) and act only on a sandbox that is running and due.
   */
  onDue(sandboxId: string): unknown;
}

/**
 * One timer per sandbox at its end time, so the timeout action (pause or kill) runs when the time
 * comes instead of at the reaper's next pass. Arming again replaces the timer; the reaper's interval
 * pass stays as the safety net (a timer lost to a bug, a clock step).
 */
export class DeadlineTimers {
  readonly #deps: DeadlineTimersDeps;
  readonly #armed = new Map<string, { endAt: number; timer: unknown }>();

  constructor(deps: DeadlineTimersDeps) {
    this.#deps = deps;
  }

  /** Sets the sandbox's timer for `endAt` (epoch ms); undefined (no timeout, or paused) only clears it. */
  arm(sandboxId: string, endAt: number | undefined): void {
    this.disarm(sandboxId);
    if (endAt === undefined) return;
    const delay = Math.min(MAX_DELAY_MS, Math.max(0, endAt - this.#deps.clock.now()));
    const timer = this.#deps.timers.set(() => {
      if (this.#armed.get(sandboxId)?.timer !== timer) return undefined;
      this.#armed.delete(sandboxId);
      // A chained wait that has not reached the end time yet: wait again.
      if (endAt > this.#deps.clock.now()) return this.arm(sandboxId, endAt);
      return this.#deps.onDue(sandboxId);
    }, delay);
    this.#armed.set(sandboxId, { endAt, timer });
  }

  disarm(sandboxId: string): void {
    const armed = this.#armed.get(sandboxId);
    if (!armed) return;
    this.#deps.timers.clear(armed.timer);
    this.#armed.delete(sandboxId);
  }

  /** The end time a sandbox's timer is set for, if any (for tests and diagnostics). */
  armedFor(sandboxId: string): number | undefined {
    return this.#armed.get(sandboxId)?.endAt;
  }

  /** Clears every timer (agent shutdown). */
  clear(): void {
    for (const id of [...this.#armed.keys()]) this.disarm(id);
  }
}
