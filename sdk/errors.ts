import type { TransportAnswer } from "./config.js";

/**
 * Every failure the SDK reports is a `WrennError` with the API's error code, the HTTP status and the
 * request id to quote, plus a hint that says what to do about the common ones.
 */

/** Codes the SDK adds to the API's own error codes. */
export type ClientErrorCode = "NETWORK_ERROR" | "TIMEOUT" | "BAD_RESPONSE" | "STREAM_ENDED";

/** What to do about an error code; shown by the CLI under the message. */
const hints: Record<string, string> = {
  UNAUTHORIZED: "set WRENN_API_KEY (or --api-key) to a key printed by `wrenn up` or made with `wrenn keys create`",
  FORBIDDEN: "this needs an admin API key",
  NOT_FOUND: "check the id with `wrenn sandbox list --state all`",
  CONFLICT: "check the sandbox's state with `wrenn sandbox get <id>`",
  NO_CAPACITY: "no host has room: kill idle sandboxes, or register another agent with `wrenn agent --register`",
  AGENT_UNAVAILABLE: "the host agent did not answer; check it runs (`wrenn hosts`) and try again",
  NETWORK_ERROR: "is the API running? start it with `npm start`, or set WRENN_API_URL",
  TIMEOUT: "the API did not answer in time; try again or raise the timeout",
};

/** An error from the Wrenn API or from reaching it. */
export class WrennError extends Error {
  /** The API's error code (`NOT_FOUND`, `CONFLICT`, …) or a client-side one (`NETWORK_ERROR`, …). */
  readonly code: string;
  /** HTTP status, or 0 when no answer arrived. */
  readonly status: number;
  /** The API's request id, to quote when reporting a problem. */
  readonly requestId: string | undefined;
  /** Field messages of a validation error. */
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: string,
    message: string,
    options: { status?: number; requestId?: string; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "WrennError";
    this.code = code;
    this.status = options.status ?? 0;
    this.requestId = options.requestId;
    this.details = options.details;
  }

  /** A sentence on what to do about this error, when there is a known one. */
  get hint(): string | undefined {
    return hints[this.code];
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Builds a WrennError from a non-2xx answer, reading the API's `{ error: { code, message, requestId } }` body. */
export async function errorFromResponse(res: TransportAnswer, what: string): Promise<WrennError> {
  const text = await res.text().catch(() => "");
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const error = isRecord(body) && isRecord(body.error) ? body.error : undefined;
  const requestId =
    (error && typeof error.requestId === "string" ? error.requestId : undefined) ??
    res.headers.get("x-request-id") ??
    undefined;
  const code = error && typeof error.code === "string" ? error.code : `HTTP_${res.status}`;
  const message =
    error && typeof error.message === "string"
      ? error.message
      : `${what}: the server answered ${res.status} ${res.statusText}${text ? `: ${text.slice(0, 200)}` : ""}`;
  const options: { status: number; requestId?: string; details?: Record<string, unknown> } = { status: res.status };
  if (requestId) options.requestId = requestId;
  if (error && isRecord(error.details)) options.details = error.details;
  return new WrennError(code, message, options);
}
