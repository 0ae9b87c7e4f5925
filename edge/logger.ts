import { createLogger, type LogFields, type Logger, type LogThreshold } from "../lib/log.js";

// The edge's logger is the shared one (lib/log.ts: one set of field names across edge, agent and envd).
export { type LogFields, type Logger, noopLogger } from "../lib/log.js";

/** Log levels in increasing severity; `silent` logs nothing. */
export type LogLevel = LogThreshold;

/**
 * A logger writing one JSON object per line to the console: stdout on Node (warnings and errors on
 * stderr), the log stream on Workers, where the console is the only sink.
 */
export function createConsoleLogger(level: LogLevel = "info", base: LogFields = {}): Logger {
  return createLogger({
    level,
    fields: { component: "edge", ...base },
    sink: (line, at) => (at === "error" || at === "warn" ? console.error(line) : console.log(line)),
  });
}
