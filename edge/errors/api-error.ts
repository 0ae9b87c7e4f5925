import { z } from "@hono/zod-openapi";
import { codeToStatus, ErrorCode } from "./codes.js";

/** The one error body of the API. */
export const ErrorBody = z
  .object({
    error: z.object({
      code: ErrorCode,
      message: z.string(),
      requestId: z.string(),
      details: z.record(z.string(), z.unknown()).optional(),
    }),
  })
  .openapi("Error");
/** The error body as a TypeScript type. */
export type ErrorBody = z.infer<typeof ErrorBody>;

/** An error that becomes an HTTP response with the one error body. */
export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly status: (typeof codeToStatus)[ErrorCode];
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, { cause: options.cause });
    this.name = "ApiError";
    this.code = code;
    this.status = codeToStatus[code];
    this.details = options.details;
  }
}

const describe = (code: ErrorCode, description: string) => ({
  description: `${description} (\`${code}\`)`,
  content: { "application/json": { schema: ErrorBody } },
});

/** Error responses every authenticated route may answer, for OpenAPI documents. */
export const openApiErrorResponses = {
  400: describe("BAD_REQUEST", "The request is invalid; `details` names the fields"),
  401: describe("UNAUTHORIZED", "No API key, or an unknown or revoked one"),
  403: describe("FORBIDDEN", "The key may not do this"),
  404: describe("NOT_FOUND", "Not found, or owned by another team"),
  500: describe("INTERNAL_SERVER_ERROR", "Something went wrong; quote the requestId"),
} as const;

/** Extra error responses of routes that call a host agent. */
export const openApiAgentErrorResponses = {
  409: describe("CONFLICT", "The sandbox is not in a state that allows this"),
  502: describe("AGENT_ERROR", "The host agent failed"),
  503: describe(
    "AGENT_UNAVAILABLE",
    "The host agent (or, on create, any host with capacity: NO_CAPACITY) is unavailable",
  ),
} as const;
