/**
 * The closed vocabularies of the API: sandbox states, stop reasons, timeout actions, host statuses
 * and isolation classes. They live below every layer of the edge so that the database schema (its
 * column types), the services, the route schemas and the SDK (type-only) all name the same values
 * without importing one another; docs/architecture.md has the picture. Nothing here imports anything.
 */

/**
 * Sandbox states (DESIGN.md §3). `pending` is written before the agent is called, so a crash at any
 * step leaves a row the reconcile sweep can converge; `missing` means its host is unreachable.
 */
export const sandboxStates = [
  "pending",
  "starting",
  "running",
  "pausing",
  "paused",
  "resuming",
  "stopped",
  "error",
  "missing",
] as const;
/** One of `sandboxStates`. */
export type SandboxStateName = (typeof sandboxStates)[number];

/** States in which a sandbox still holds (or may hold) resources on its host. */
export const activeSandboxStates = [
  "pending",
  "starting",
  "running",
  "pausing",
  "paused",
  "resuming",
  "missing",
] as const satisfies readonly SandboxStateName[];

/** Why a sandbox stopped. */
export const stopReasons = ["killed", "timeout", "error", "lost"] as const;
/** One of `stopReasons`. */
export type StopReasonName = (typeof stopReasons)[number];

/** What happens when a sandbox's timeout runs out. */
export const timeoutActions = ["kill", "pause"] as const;
/** One of `timeoutActions`. */
export type TimeoutActionName = (typeof timeoutActions)[number];

/** Where a host is in its life: `active` takes new sandboxes, `draining` and `unhealthy` do not. */
export const hostStatuses = ["active", "draining", "unhealthy"] as const;
/** One of `hostStatuses`. */
export type HostStatus = (typeof hostStatuses)[number];

/**
 * How strongly a host's runtime separates a guest from the host kernel, strongest first: `vm`
 * (Firecracker, QEMU), `gvisor` (a user-space kernel), `namespace` (shares the host kernel).
 */
export const isolationClasses = ["vm", "gvisor", "namespace"] as const;
/** One of `isolationClasses`. */
export type IsolationClassName = (typeof isolationClasses)[number];
