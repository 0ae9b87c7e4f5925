/**
 * The public event vocabulary (docs/events-and-webhooks.md). Sandbox types follow the sandbox's
 * settled states; transitional states (`pausing`, `resuming`) and `missing` are not events of their
 * own (a host going down is `host.down`).
 */
export const eventTypes = [
  "sandbox.created",
  "sandbox.running",
  "sandbox.paused",
  "sandbox.resumed",
  "sandbox.updated",
  "sandbox.timed_out",
  "sandbox.killed",
  "sandbox.errored",
  "snapshot.created",
  "command.finished",
  "host.up",
  "host.down",
  "host.drained",
  "webhook.disabled",
] as const;
/** One of `eventTypes`. */
export type EventType = (typeof eventTypes)[number];

/** Event types only admin keys see (operator events: they have no team). */
export const operatorEventTypes: readonly EventType[] = ["host.up", "host.down", "host.drained"];

/** Whether `pattern` (an event type, or a prefix ending in `.*`) names a known event type. */
export function isEventTypePattern(pattern: string): boolean {
  if (pattern.endsWith(".*")) {
    const prefix = pattern.slice(0, -1);
    return eventTypes.some((t) => t.startsWith(prefix));
  }
  return (eventTypes as readonly string[]).includes(pattern);
}

/** Whether an event of `type` matches a subscription list (empty: everything; `sandbox.*`: a prefix). */
export function eventTypeMatches(patterns: readonly string[], type: string): boolean {
  if (patterns.length === 0) return true;
  return patterns.some((p) => (p.endsWith(".*") ? type.startsWith(p.slice(0, -1)) : p === type));
}

/**
 * The public event for a sandbox's state change, or null when the change is not one users react to
 * (transitional states, a host coming back, the same state again).
 */
export function sandboxEventType(
  from: string | null | undefined,
  to: string,
  stopReason: string | null | undefined,
): EventType | null {
  if (from === to) return null;
  switch (to) {
    case "pending":
      return from === null || from === undefined ? "sandbox.created" : null;
    case "running":
      if (from === "pending" || from === "starting") return "sandbox.running";
      if (from === "resuming" || from === "paused") return "sandbox.resumed";
      return null;
    case "paused":
      return from === "missing" ? null : "sandbox.paused";
    case "stopped":
      if (from === "error") return null;
      if (stopReason === "killed") return "sandbox.killed";
      if (stopReason === "timeout") return "sandbox.timed_out";
      return "sandbox.errored";
    case "error":
      return "sandbox.errored";
    default:
      return null;
  }
}
