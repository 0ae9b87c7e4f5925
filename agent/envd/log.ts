/** Structured logging for envd: one JSON object per line on stderr, so the guest's console log stays greppable. */
export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

type Level = "info" | "warn" | "error";

/** Creates a logger writing JSON lines to `write` (stderr by default); `quiet` drops info lines. */
export function createLogger(
  opts: { quiet?: boolean; write?: (line: string) => void; base?: Record<string, unknown> } = {},
): Logger {
  const write = opts.write ?? ((line: string) => process.stderr.write(line));
  const base = opts.base ?? {};
  const emit = (level: Level, message: string, fields?: Record<string, unknown>) => {
    if (opts.quiet && level === "info") return;
    const record: Record<string, unknown> = { ts: new Date().toISOString(), level, msg: message, ...base, ...fields };
    const err = record.err;
    if (err instanceof Error) record.err = { message: err.message, stack: err.stack };
    write(`${JSON.stringify(record)}\n`);
  };
  return {
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (fields) => createLogger({ ...opts, base: { ...base, ...fields } }),
  };
}

/** A logger that discards everything, for tests. */
export const silentLogger: Logger = {
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => silentLogger,
};
