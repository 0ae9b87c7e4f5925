import { AsyncLocalStorage } from "node:async_hooks";
import type { LogFields } from "./log.js";
import { parseTraceparent, TRACEPARENT_HEADER } from "./tracing-headers.js";

/**
 * The request a process is serving, for its log lines: the agent and envd run each request inside
 * withLogContext(), and their loggers (lib/log.ts `context`) add these fields to every line written
 * on its behalf, in whatever module and however many awaits deep. The edge's request id travels as
 * x-request-id from the edge to the agent and from the agent to envd.
 */

/** The header that carries the edge's request id between edge, agent and envd. */
export const REQUEST_ID_HEADER = "x-request-id";

/** What the edge accepts as a request id (edge/middleware/init.ts); anything else gets no say in the logs. */
const ACCEPTABLE_REQUEST_ID = /^[A-Za-z0-9._:-]{8,128}$/;

const current = new AsyncLocalStorage<LogFields>();

/** Runs `fn` with `fields` on every log line written while it runs. */
export function withLogContext<T>(fields: LogFields, fn: () => T): T {
  return current.run(fields, fn);
}

/** The fields of the request being served, if any (a logger's `context`). */
export function logContext(): LogFields | undefined {
  return current.getStore();
}

/** The request id of the request being served, to pass on to the next hop. */
export function currentRequestId(): string | undefined {
  const id = current.getStore()?.requestId;
  return typeof id === "string" ? id : undefined;
}

/**
 * What a request contributes to every log line written on its behalf: its request id, if it is one,
 * and the trace id of a well-formed W3C `traceparent` (lib/tracing-headers.ts), so that a line is
 * found from a trace as well as from a request id.
 */
export function requestLogFields(headers: Record<string, string | string[] | undefined>): LogFields {
  const id = headers[REQUEST_ID_HEADER];
  const fields: LogFields = typeof id === "string" && ACCEPTABLE_REQUEST_ID.test(id) ? { requestId: id } : {};
  const trace = parseTraceparent(headers[TRACEPARENT_HEADER]);
  if (trace !== undefined) fields.traceId = trace.traceId;
  return fields;
}
