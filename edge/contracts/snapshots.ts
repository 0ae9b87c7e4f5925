/**
 * Where a snapshot is in its life. `creating`: the row is written and the agent is being asked (a crash
 * here leaves a row the reconcile sweep settles against the host's ListSnapshots); `ready`: sandboxes
 * may start from it; `error`: the agent refused or failed (never listed by default); `deleted`: deleted
 * by the team; `lost`: its host no longer reports it.
 */
export const snapshotStates = ["creating", "ready", "error", "deleted", "lost"] as const;
/** One of the snapshot states. */
export type SnapshotStateName = (typeof snapshotStates)[number];
