import type { ErrorCode } from "../errors/codes.js";

/**
 * The sandbox proxy's error answers. They carry E2B's fields (`message`, `code: <status>`,
 * `sandboxId`), which the SDKs read (a 502 from the proxy means "the sandbox is not running" to
 * `isRunning()`), and the API's one error shape under `error` ({ code, message, requestId }), so a
 * client of either kind gets what it expects.
 */
function json(
  status: number,
  code: ErrorCode,
  requestId: string,
  message: string,
  extra: Record<string, unknown> = {},
): Response {
  return new Response(JSON.stringify({ ...extra, message, code: status, error: { code, message, requestId } }), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
  });
}

/** A missing, killed or paused (without auto-resume) sandbox. */
export function sandboxNotFound(sandboxId: string, requestId: string): Response {
  return json(502, "SANDBOX_NOT_FOUND", requestId, "The sandbox was not found", { sandboxId });
}

/** A signed `/files` URL whose signature matches no live sandbox. */
export function signatureMatchesNoSandbox(requestId: string): Response {
  return json(
    502,
    "SANDBOX_NOT_FOUND",
    requestId,
    "The sandbox was not found: no live sandbox matches this signed URL",
  );
}

/** A request to a port of a sandbox created with `allowPublicTraffic: false`, without its traffic token. */
export function trafficTokenRequired(sandboxId: string, requestId: string): Response {
  return json(
    403,
    "FORBIDDEN",
    requestId,
    "The sandbox's ports are not public: send its traffic access token in the e2b-traffic-access-token header",
    { sandboxId },
  );
}

/** A sandbox whose host does not answer, or whose guest connection broke. */
export function sandboxUnavailable(sandboxId: string, message: string, requestId: string): Response {
  return json(502, "SANDBOX_UNREACHABLE", requestId, `The sandbox is not reachable: ${message}`, { sandboxId });
}

/**
 * A guest (or an agent relaying one) that answered something that is not a usable HTTP response:
 * a status outside 200–599, a status line or headers that do not parse, an invalid reason phrase.
 */
export function sandboxBadResponse(sandboxId: string, message: string, requestId: string): Response {
  return json(502, "SANDBOX_BAD_RESPONSE", requestId, `The sandbox answered a malformed response: ${message}`, {
    sandboxId,
  });
}

/** A running sandbox with nothing listening on the port. */
export function portNotOpen(sandboxId: string, port: number, requestId: string): Response {
  return json(502, "SANDBOX_PORT_NOT_OPEN", requestId, "The sandbox is running but port is not open", {
    sandboxId,
    port,
  });
}

/** A request that names no valid sandbox or port. */
export function badSandboxRoute(message: string, requestId: string): Response {
  return json(400, "BAD_REQUEST", requestId, message);
}

/** envd's internal routes (`/init`, `/freeze`, …), which only the host agent may call. */
export function internalRouteRefused(path: string, requestId: string): Response {
  return json(404, "NOT_FOUND", requestId, `${path} is not reachable through the sandbox proxy`);
}

/**
 * Thrown by a proxy `fetch` when the agent's answer is not a response the edge can relay: it is
 * turned into 502 `SANDBOX_BAD_RESPONSE`, never a 500. (The agent passes the guest's status line and
 * headers through, so the guest controls them.)
 */
export class BadUpstreamResponse extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BadUpstreamResponse";
  }
}

/** Whether a status may be relayed as a final answer (the range `Response` accepts). */
export function isRelayableStatus(status: number): boolean {
  return Number.isInteger(status) && status >= 200 && status <= 599;
}

/** A reason phrase `Response` accepts (RFC 9112: HTAB, SP, VCHAR, obs-text); anything else is dropped. */
export function relayableStatusText(text: string | undefined): string {
  return text !== undefined && /^[\t\x20-\x7e\x80-\xff]*$/.test(text) ? text : "";
}
