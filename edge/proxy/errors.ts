/**
 * The sandbox proxy's error answers, in E2B's shapes: the SDKs treat a 502 from the proxy as "the
 * sandbox is not running" (`isRunning()`), and E2B's tests read these bodies.
 */

function json(status: number, body: Record<string, unknown>): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
  });
}

/** A missing, killed or paused (without auto-resume) sandbox. */
export function sandboxNotFound(sandboxId: string): Response {
  return json(502, { sandboxId, message: "The sandbox was not found", code: 502 });
}

/** A signed `/files` URL whose signature matches no live sandbox. */
export function signatureMatchesNoSandbox(): Response {
  return json(502, { message: "The sandbox was not found: no live sandbox matches this signed URL", code: 502 });
}

/** A sandbox whose host does not answer, or whose guest connection broke. */
export function sandboxUnavailable(sandboxId: string, message: string): Response {
  return json(502, { sandboxId, message: `The sandbox is not reachable: ${message}`, code: 502 });
}

/** A running sandbox with nothing listening on the port. */
export function portNotOpen(sandboxId: string, port: number): Response {
  return json(502, { sandboxId, message: "The sandbox is running but port is not open", port, code: 502 });
}

/** A request that names no valid sandbox or port. */
export function badSandboxRoute(message: string): Response {
  return json(400, { message, code: 400 });
}

/** envd's internal routes (`/init`, `/freeze`, …), which only the host agent may call. */
export function internalRouteRefused(path: string): Response {
  return json(404, { message: `${path} is not reachable through the sandbox proxy`, code: 404 });
}
