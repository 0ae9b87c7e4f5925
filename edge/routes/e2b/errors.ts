import { type Hook, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { AppEnv } from "../../context.js";
import { fieldMessages, toApiError } from "../../errors/handle.js";

/**
 * E2B's error body. The SDKs branch on `code` (404 → not found, 409 → already paused), so it always
 * equals the HTTP status.
 */
export const E2bError = z
  .object({
    code: z.number().int().openapi({ description: "The HTTP status", example: 404 }),
    message: z.string(),
  })
  .openapi("E2bError");
export type E2bError = z.infer<typeof E2bError>;

/** E2B's answer to a missing or bad API key; the SDK turns any 401 into `AuthenticationError`. */
export const invalidApiKeyMessage = "Invalid API key, please visit https://e2b.dev/docs/api-key for more information.";

/** Answers with E2B's error body. */
export function e2bErrorResponse(c: Context<AppEnv>, status: ContentfulStatusCode, message: string): Response {
  return c.json({ code: status, message } satisfies E2bError, status);
}

/** `onError` of the E2B router: every failure in E2B's shape; server faults logged, their detail not returned. */
export function handleE2bError(err: Error, c: Context<AppEnv>): Response {
  const apiError = toApiError(err);
  const logger = c.get("logger");
  if (apiError.status >= 500) logger?.error("e2b request failed", { err, code: apiError.code, cause: apiError.cause });
  const message =
    apiError.code === "UNAUTHORIZED"
      ? invalidApiKeyMessage
      : apiError.code === "INTERNAL_SERVER_ERROR"
        ? `internal error; quote request id ${c.get("requestId")} when reporting it`
        : apiError.message;
  return e2bErrorResponse(c, apiError.status, message);
}

/** `defaultHook` of the E2B router: validation failures as E2B 400s naming the fields. */
export const handleE2bZodError: Hook<unknown, AppEnv, string, Response | undefined> = (result, c) => {
  if (result.success) return undefined;
  const summary = Object.entries(fieldMessages(result.error, result.target))
    .map(([k, v]) => `${k}: ${v}`)
    .join("; ");
  return e2bErrorResponse(c, 400, `invalid request: ${summary}`);
};

const describe = (description: string) => ({
  description,
  content: { "application/json": { schema: E2bError } },
});

/** Error responses of every E2B route, for the OpenAPI document. */
export const e2bErrorResponses = {
  400: describe("The request is invalid"),
  401: describe("No API key, or an unknown or revoked one"),
  404: describe("No such sandbox (or it was killed)"),
  500: describe("Something went wrong"),
  502: describe("The host agent failed"),
  503: describe("The host agent, or any host with capacity, is unavailable"),
} as const;
