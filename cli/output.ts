/** Where a command writes: injected so tests and `up` can capture it. */
export interface Output {
  /** Writes a line to stdout. */
  out(line: string): void;
  /** Writes a line to stderr (progress, warnings, errors). */
  err(line: string): void;
  /** Writes raw bytes to stdout (command output passed through). */
  rawOut(data: Uint8Array | string): void;
  /** Writes raw bytes to stderr. */
  rawErr(data: Uint8Array | string): void;
}

/** The process's own stdout and stderr. */
export const processOutput: Output = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  rawOut: (data) => process.stdout.write(data),
  rawErr: (data) => process.stderr.write(data),
};

/** A column of a table: its header and how to read a row's cell. */
export interface Column<T> {
  header: string;
  value(row: T): string;
}

/** Renders rows as a left-aligned text table with a header; "(none)" when empty. */
export function renderTable<T>(rows: readonly T[], columns: readonly Column<T>[]): string[] {
  if (rows.length === 0) return ["(none)"];
  const cells = rows.map((row) => columns.map((c) => c.value(row)));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => (r[i] ?? "").length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => (i === values.length - 1 ? v : v.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(columns.map((c) => c.header.toUpperCase())), ...cells.map(line)];
}

/** Renders one object as aligned `key: value` lines. */
export function renderFields(fields: Array<[string, string]>): string[] {
  const width = Math.max(...fields.map(([k]) => k.length));
  return fields.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${v}`);
}

/** Prints a value as indented JSON (for `--json`). */
export function printJson(output: Output, value: unknown): void {
  output.out(JSON.stringify(value, null, 2));
}

/** "3m ago" / "in 5m" style relative time, for tables. */
export function relativeTime(iso: string | null, now: Date = new Date()): string {
  if (!iso) return "-";
  const ms = Date.parse(iso) - now.getTime();
  const abs = Math.abs(ms);
  const unit =
    abs < 60_000
      ? `${Math.round(abs / 1000)}s`
      : abs < 3_600_000
        ? `${Math.round(abs / 60_000)}m`
        : abs < 86_400_000
          ? `${Math.round(abs / 3_600_000)}h`
          : `${Math.round(abs / 86_400_000)}d`;
  return ms >= 0 ? `in ${unit}` : `${unit} ago`;
}
