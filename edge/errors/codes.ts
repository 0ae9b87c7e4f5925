import { z } from "@hono/zod-openapi";

/** Every error code the API answers with. One table; the HTTP status of each is in `codeToStatus`. */
export const ErrorCode = z.enum([
  "BAD_REQUEST",
  "INVALID_NETWORK_POLICY",
  "UNAUTHORIZED",
  "API_KEY_EXPIRED",
  "FORBIDDEN",
  "INSUFFICIENT_SCOPE",
  "NOT_FOUND",
  "CONFLICT",
  "PAYLOAD_TOO_LARGE",
  "RATE_LIMITED",
  "QUOTA_EXCEEDED",
  "NOT_IMPLEMENTED",
  "AGENT_ERROR",
  "AGENT_UNAVAILABLE",
  "NO_CAPACITY",
  "SANDBOX_NOT_FOUND",
  "SANDBOX_UNREACHABLE",
  "SANDBOX_PORT_NOT_OPEN",
  "SANDBOX_BAD_RESPONSE",
  "DB_UNAVAILABLE",
  "BAD_ENVIRONMENT",
  "INTERNAL_SERVER_ERROR",
]);
/** One of the API error codes. */
export type ErrorCode = z.infer<typeof ErrorCode>;

/** HTTP status per error code; a `Record` so the compiler checks the table is complete. */
export const codeToStatus = {
  BAD_REQUEST: 400,
  INVALID_NETWORK_POLICY: 400,
  UNAUTHORIZED: 401,
  API_KEY_EXPIRED: 401,
  FORBIDDEN: 403,
  INSUFFICIENT_SCOPE: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  RATE_LIMITED: 429,
  QUOTA_EXCEEDED: 429,
  NOT_IMPLEMENTED: 501,
  AGENT_ERROR: 502,
  AGENT_UNAVAILABLE: 503,
  NO_CAPACITY: 503,
  // The sandbox proxy's refusals: 502 as E2B's proxy answers them (the SDKs read 502 as "not running").
  SANDBOX_NOT_FOUND: 502,
  SANDBOX_UNREACHABLE: 502,
  SANDBOX_PORT_NOT_OPEN: 502,
  SANDBOX_BAD_RESPONSE: 502,
  DB_UNAVAILABLE: 503,
  BAD_ENVIRONMENT: 500,
  INTERNAL_SERVER_ERROR: 500,
} as const satisfies Record<ErrorCode, number>;

/** The status codes of `codeToStatus`, as a type. */
export type ErrorStatus = (typeof codeToStatus)[ErrorCode];
