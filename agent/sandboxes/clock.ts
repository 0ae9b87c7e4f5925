/**
 * The sandbox manager's wall clock (epoch milliseconds): timeouts, stop times, reap ages. Injected
 * so that a test can move time instead of waiting for it; durations of one call use performance.now().
 */
export interface Clock {
  now(): number;
}

/** The host's clock. */
export const systemClock: Clock = { now: () => Date.now() };
