import { type ParseArgsConfig, parseArgs } from "node:util";
import { CliError, exitCodes } from "./errors.js";

/** Options every API command takes. */
export const commonOptions = {
  json: { type: "boolean", default: false },
  "api-url": { type: "string" },
  "api-key": { type: "string" },
  help: { type: "boolean", short: "h", default: false },
} as const satisfies NonNullable<ParseArgsConfig["options"]>;

/** Parses a command's arguments strictly; unknown options and bad values become usage errors with the usage text. */
export function parseCommand<const O extends NonNullable<ParseArgsConfig["options"]>>(
  args: string[],
  options: O,
  usage: string,
) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new CliError((err as Error).message, { exitCode: exitCodes.usage, hint: usage });
  }
}

/** Throws a usage error. */
export function usageError(message: string, usage: string): never {
  throw new CliError(message, { exitCode: exitCodes.usage, hint: usage });
}

/** Parses repeated `KEY=VALUE` options into a map. */
export function keyValues(values: string[] | undefined, flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of values ?? []) {
    const eq = item.indexOf("=");
    if (eq <= 0) throw new CliError(`${flag} takes KEY=VALUE, got "${item}"`, { exitCode: exitCodes.usage });
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/** Parses a whole number option. */
export function wholeNumber(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[0-9]+$/.test(value)) {
    throw new CliError(`${flag} takes a whole number, got "${value}"`, { exitCode: exitCodes.usage });
  }
  return Number(value);
}

/** Parses a duration: plain seconds or with a unit (`90`, `90s`, `15m`, `2h`, `1d`). */
export function durationSeconds(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const match = /^([0-9]+)([smhd]?)$/.exec(value.trim());
  if (!match) {
    throw new CliError(`${flag} takes seconds or a duration like 90s, 15m, 2h; got "${value}"`, {
      exitCode: exitCodes.usage,
    });
  }
  const factor = { "": 1, s: 1, m: 60, h: 3600, d: 86_400 }[match[2] ?? ""] ?? 1;
  return Number(match[1]) * factor;
}

/** Quotes an argument for bash, so `exec ID -- a b` runs exactly the words given. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
