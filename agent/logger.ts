import { createLogger as createSharedLogger, type Logger } from "../lib/log.js";
import { logContext } from "../lib/request-context.js";
import type { LogLevel } from "./config.js";

// The agent's logger is the shared one (lib/log.ts: one set of field names across edge, agent and envd).
// Context (component, sandboxId) is bound with child() and never interpolated into the message; the
// request id of the request being served is added to every line (lib/request-context.ts).
export { type LogFields, type Logger, noopLogger } from "../lib/log.js";
export { requestLogFields, withLogContext } from "../lib/request-context.js";

/** JSON lines on stderr (or through `write`, one line with its newline per call). */
export function createLogger(
  level: LogLevel,
  write: (line: string) => void = (line) => process.stderr.write(line),
  bound: Record<string, unknown> = {},
): Logger {
  return createSharedLogger({ level, fields: bound, sink: (line) => write(`${line}\n`), context: logContext });
}
