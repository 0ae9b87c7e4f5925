/** Structured log lines (JSON, one a line) on stderr: wrenn-init keeps them in /var/log/wrenn/start.log. */
export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export function createStderrLogger(): Logger {
  const write = (level: string, message: string, fields?: Record<string, unknown>) => {
    const extra = Object.fromEntries(
      Object.entries(fields ?? {}).map(([k, v]) => [k, v instanceof Error ? v.message : v]),
    );
    process.stderr.write(
      `${JSON.stringify({ time: new Date().toISOString(), level, service: "code-interpreter", message, ...extra })}\n`,
    );
  };
  return {
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
  };
}

/** A logger that drops everything (tests). */
export const noopLogger: Logger = { info() {}, warn() {}, error() {} };
