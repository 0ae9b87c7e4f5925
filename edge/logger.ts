/** Structured fields attached to a log line. */
export type LogFields = Record<string, unknown>;

/** A structured, request-scoped logger. Messages are constant text; context goes in `fields`. */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

/** Log levels in increasing severity; `silent` logs nothing. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

function serialise(value: unknown): unknown {
  if (value instanceof Error) {
    return { name: value.name, message: value.message, stack: value.stack, cause: serialise(value.cause) };
  }
  return value;
}

/** A logger writing one JSON object per line to the console (stdout on Node, the log stream on Workers). */
export function createConsoleLogger(level: LogLevel = "info", base: LogFields = {}): Logger {
  const write = (at: Exclude<LogLevel, "silent">, message: string, fields?: LogFields) => {
    if (rank[at] < rank[level]) return;
    const record: LogFields = { time: new Date().toISOString(), level: at, msg: message, ...base };
    for (const [k, v] of Object.entries(fields ?? {})) record[k] = serialise(v);
    const line = JSON.stringify(record);
    if (at === "error" || at === "warn") console.error(line);
    else console.log(line);
  };
  return {
    debug: (m, f) => write("debug", m, f),
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
    child: (fields) => createConsoleLogger(level, { ...base, ...fields }),
  };
}

/** A logger that drops everything; for tests. */
export const noopLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => noopLogger,
};
