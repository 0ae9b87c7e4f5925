/**
 * Responses whose body is relayed from a sandbox as it arrives (proxied traffic, file downloads).
 * When such a body fails halfway (the guest or its agent went away), the runtime must cut the
 * client's connection so the client sees a truncated answer, not a clean end; the Node entry point
 * does that for responses marked here, quietly (one JSON log line instead of a raw stack trace).
 */
const relayed = new WeakSet<Response>();

/** Marks a response as relayed from a sandbox; returns it. */
export function markRelayed(response: Response): Response {
  relayed.add(response);
  return response;
}

/** Whether `markRelayed` marked this response. */
export function isRelayed(response: Response): boolean {
  return relayed.has(response);
}
