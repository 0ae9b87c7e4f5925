/**
 * The one structured logger of the edge, the agent and envd: one JSON object per line, with the same
 * field names everywhere so that one query finds a request or a sandbox across all three:
 *
 *   time       ISO 8601 timestamp
 *   level      debug | info | warn | error
 *   msg        constant text (context goes in fields, never interpolated into the message)
 *   component  which part of a process wrote the line ("agent", "exec", "slots", "envd", …)
 *   requestId  the edge's request id (X-Request-Id), wherever the line belongs to a request
 *   sandboxId  the sandbox the line is about
 *   err        an error as { name, message, stack?, cause? }
 *
 * Context is bound with child() (`logger.child({ requestId })`, `log.child({ sandboxId })`), so every
 * line written under it carries the ids. This module is pure (no node:* imports): the edge on Workers
 * uses it too, each process giving it a sink that writes a line where its logs go.
 */

/** Structured fields attached to a log line. */
export type LogFields = Record<string, unknown>;

/** A level a line is written at. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** The least severe level a logger writes; `silent` writes nothing. */
export type LogThreshold = LogLevel | "silent";

/** A structured logger. Messages are constant text; context goes in `fields` or is bound with child(). */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger whose every line also carries `fields` (a later binding of the same name wins). */
  child(fields: LogFields): Logger;
}

/** Writes one finished line (JSON, no trailing newline); `level` lets a sink pick stdout or stderr. */
export type LogSink = (line: string, level: LogLevel) => void;

export interface LoggerOptions {
  /** Lines below this level are dropped (default info). */
  level?: LogThreshold;
  sink: LogSink;
  /** Fields bound to every line (what child() adds to). */
  fields?: LogFields;
  /**
   * Fields of the work in progress, asked for at each line (the agent's request id, kept in an
   * AsyncLocalStorage by its server). Bound and call-site fields of the same name win.
   */
  context?: () => LogFields | undefined;
  /** The clock (tests). */
  now?: () => Date;
}

/** An error as it appears in a line. */
export interface SerialisedError {
  name: string;
  message: string;
  stack?: string;
  cause?: unknown;
}

const rank: Record<LogThreshold, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

/** The field names every line has before its own fields; a field of the same name cannot replace them. */
const RESERVED = new Set(["time", "level", "msg"]);

/** An Error as plain data (its cause chain too, a few levels deep); anything else as it is. */
export function serialiseError(value: unknown, depth = 0): unknown {
  if (!(value instanceof Error)) return value;
  const out: SerialisedError = { name: value.name, message: value.message };
  if (value.stack !== undefined) out.stack = value.stack;
  if (value.cause !== undefined && depth < 4) out.cause = serialiseError(value.cause, depth + 1);
  return out;
}

/** Whether `level` passes the threshold `at` (for callers that would build costly fields). */
export function enabled(threshold: LogThreshold, level: LogLevel): boolean {
  return rank[level] >= rank[threshold];
}

/**
 * JSON for a record. A field JSON cannot hold (a cycle, a bigint) costs that line its other fields,
 * not the process, and the line keeps its ids.
 */
function stringify(record: LogFields): string {
  try {
    return JSON.stringify(record);
  } catch (err) {
    const { time, level, msg, component, requestId, sandboxId } = record;
    const logError = err instanceof Error ? err.message : String(err);
    return JSON.stringify({ time, level, msg, component, requestId, sandboxId, logError });
  }
}

/** A logger writing one JSON line per call through `sink`. */
export function createLogger(options: LoggerOptions): Logger {
  const threshold = options.level ?? "info";
  const bound = options.fields ?? {};
  const now = options.now ?? (() => new Date());
  const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (!enabled(threshold, level)) return;
    const record: LogFields = { time: now().toISOString(), level, msg };
    for (const source of [options.context?.() ?? {}, bound, fields ?? {}]) {
      for (const [key, value] of Object.entries(source)) if (!RESERVED.has(key)) record[key] = serialiseError(value);
    }
    options.sink(stringify(record), level);
  };
  return {
    debug: (msg, fields) => emit("debug", msg, fields),
    info: (msg, fields) => emit("info", msg, fields),
    warn: (msg, fields) => emit("warn", msg, fields),
    error: (msg, fields) => emit("error", msg, fields),
    child: (fields) => createLogger({ ...options, fields: { ...bound, ...fields } }),
  };
}

/** A logger that drops everything; for tests and for callers that were given none. */
export const noopLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => noopLogger,
};
