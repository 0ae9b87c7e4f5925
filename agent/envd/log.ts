import { createLogger as createSharedLogger, type Logger, noopLogger } from "../../lib/log.js";
import { logContext } from "../../lib/request-context.js";

// envd's logger is the shared one (lib/log.ts: one set of field names across edge, agent and envd):
// JSON lines on stderr, so the guest's console log stays greppable. Lines written while serving a
// request carry the request id the agent passed on (lib/request-context.ts).
export { type LogFields, type Logger, noopLogger } from "../../lib/log.js";
export { requestLogFields, withLogContext } from "../../lib/request-context.js";

/** Creates a logger writing JSON lines to `write` (stderr by default); `quiet` drops info lines. */
export function createLogger(
  opts: { quiet?: boolean; write?: (line: string) => void; base?: Record<string, unknown> } = {},
): Logger {
  const write = opts.write ?? ((line: string) => process.stderr.write(line));
  return createSharedLogger({
    level: opts.quiet ? "warn" : "info",
    fields: { component: "envd", ...opts.base },
    sink: (line) => write(`${line}\n`),
    context: logContext,
  });
}

/** A logger that discards everything, for tests. */
export const silentLogger: Logger = noopLogger;
