import { AsyncLocalStorage } from "node:async_hooks";
import { createLogger as createSharedLogger, type LogFields, type Logger } from "../lib/log.js";
import type { LogLevel } from "./config.js";

// The agent's logger is the shared one (lib/log.ts: one set of field names across edge, agent and envd).
// Context (component, sandboxId) is bound with child() and never interpolated into the message.
export { type LogFields, type Logger, noopLogger } from "../lib/log.js";

/** The fields of the request being served (its requestId), for every line written while it is. */
const requestFields = new AsyncLocalStorage<LogFields>();

/**
 * Runs `fn` so that every agent log line written on its behalf, in whatever module and however many
 * awaits deep, carries `fields` (the edge's request id): the server calls it for each request.
 */
export function withLogContext<T>(fields: LogFields, fn: () => T): T {
  return requestFields.run(fields, fn);
}

/** The edge's request id (x-request-id) when it is one; a hostile header gets no say in the logs. */
const ACCEPTABLE_REQUEST_ID = /^[A-Za-z0-9._:-]{8,128}$/;

/** What a request contributes to every log line written on its behalf: its request id, if it has one. */
export function requestLogFields(headers: Record<string, string | string[] | undefined>): LogFields {
  const id = headers["x-request-id"];
  return typeof id === "string" && ACCEPTABLE_REQUEST_ID.test(id) ? { requestId: id } : {};
}

/** JSON lines on stderr (or through `write`, one line with its newline per call). */
export function createLogger(
  level: LogLevel,
  write: (line: string) => void = (line) => process.stderr.write(line),
  bound: Record<string, unknown> = {},
): Logger {
  return createSharedLogger({
    level,
    fields: bound,
    sink: (line) => write(`${line}\n`),
    context: () => requestFields.getStore(),
  });
}
