import type { Hook } from "@hono/zod-openapi";
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ZodError } from "zod";
import type { AppEnv } from "../context.js";
import { ServiceError } from "../services/errors.js";
import { ApiError, type ErrorBody } from "./api-error.js";
import { codeToStatus, type ErrorCode } from "./codes.js";
import { isDatabaseUnavailable } from "./database-unavailable.js";

/** Builds the one error body. */
export function errorBody(
  code: ErrorCode,
  message: string,
  requestId: string,
  details?: Record<string, unknown>,
): ErrorBody {
  return { error: details ? { code, message, requestId, details } : { code, message, requestId } };
}

/** Answers with the one error body and the code's status. */
export function errorResponse(
  c: Context<AppEnv>,
  code: ErrorCode,
  message: string,
  details?: Record<string, unknown>,
): Response {
  const requestId = c.get("requestId") ?? "unknown";
  return c.json(errorBody(code, message, requestId, details), codeToStatus[code] as ContentfulStatusCode);
}

const statusToCode: Record<number, ErrorCode> = {
  400: "BAD_REQUEST",
  401: "UNAUTHORIZED",
  403: "FORBIDDEN",
  404: "NOT_FOUND",
  409: "CONFLICT",
  413: "PAYLOAD_TOO_LARGE",
  415: "BAD_REQUEST",
  429: "RATE_LIMITED",
  501: "NOT_IMPLEMENTED",
  502: "AGENT_ERROR",
  503: "AGENT_UNAVAILABLE",
};

/** Maps any thrown value to an API error; unknown errors become a generic 500 (details only in the log). */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof ServiceError) {
    return new ApiError(err.code, err.message, { cause: err.cause, ...(err.details ? { details: err.details } : {}) });
  }
  if (err instanceof HTTPException) {
    const code = statusToCode[err.status];
    if (code) {
      const message =
        err.status === 415
          ? "unsupported content type; this route takes application/json"
          : code === "PAYLOAD_TOO_LARGE"
            ? "the request body is too large"
            : err.message || code.toLowerCase();
      return new ApiError(code, message, { cause: err });
    }
  }
  if (isDatabaseUnavailable(err)) {
    return new ApiError("DB_UNAVAILABLE", "the database is unavailable; retry shortly", { cause: err });
  }
  return new ApiError("INTERNAL_SERVER_ERROR", "internal error; quote the requestId when reporting it", { cause: err });
}

/** `app.onError`: logs server-side failures with their stack and answers with the one error body. */
export function handleError(err: Error, c: Context<AppEnv>): Response {
  const apiError = toApiError(err);
  const logger = c.get("logger");
  if (apiError.status >= 500) logger?.error("request failed", { err, code: apiError.code, cause: apiError.cause });
  else logger?.debug("request rejected", { code: apiError.code, message: apiError.message });
  if (apiError.code === "DB_UNAVAILABLE") c.header("Retry-After", "1");
  return errorResponse(c, apiError.code, apiError.message, apiError.details);
}

/** Field messages of a zod error, keyed by `<target>.<path>` (e.g. `json.vcpus`). */
export function fieldMessages(error: ZodError, target: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const issue of error.issues) {
    const key = [target, ...issue.path.map(String)].join(".");
    out[key] = out[key] ? `${out[key]}; ${issue.message}` : issue.message;
  }
  return out;
}

/** The `defaultHook` of every router: a failed validation answers 400 with field messages. */
export const handleZodError: Hook<unknown, AppEnv, string, Response | undefined> = (result, c) => {
  if (result.success) return undefined;
  const details = fieldMessages(result.error, result.target);
  const summary = Object.entries(details)
    .map(([k, v]) => `${k}: ${v}`)
    .join("; ");
  return errorResponse(c, "BAD_REQUEST", `invalid request: ${summary}`, details);
};
