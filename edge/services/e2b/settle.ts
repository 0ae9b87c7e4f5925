import type { SandboxStateName } from "../../db/schema/index.js";

/** States a sandbox passes through on its own; callers wait them out instead of failing. */
export const transitionalStates: ReadonlySet<SandboxStateName> = new Set([
  "pending",
  "starting",
  "pausing",
  "resuming",
]);

/** How long E2B-surface calls wait for a sandbox to leave a transitional state (a TCG resume is slow). */
export const settleTimeoutMs = 120_000;

/** Pause between polls of a transitional sandbox. */
export const settlePollMs = 200;

/** Sleeps `ms` (Workers-safe: a timer, no node:timers). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
