import { WrennError } from "../sdk/errors.js";

/**
 * Exit codes of `wrenn`. `sandbox exec` exits with the command's own code instead; a command killed
 * by a signal or timed out exits 124 like timeout(1) does.
 */
export const exitCodes = {
  ok: 0,
  failure: 1,
  usage: 2,
  unauthorized: 3,
  notFound: 4,
  conflict: 5,
  unavailable: 6,
  timedOut: 124,
} as const;

/** An error the CLI reports as one line plus a hint, with a chosen exit code. */
export class CliError extends Error {
  readonly exitCode: number;
  readonly hint: string | undefined;

  constructor(message: string, options: { exitCode?: number; hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "CliError";
    this.exitCode = options.exitCode ?? exitCodes.failure;
    this.hint = options.hint;
  }
}

/** The exit code for an API error. */
export function exitCodeOf(err: WrennError): number {
  switch (err.code) {
    case "UNAUTHORIZED":
    case "FORBIDDEN":
      return exitCodes.unauthorized;
    case "NOT_FOUND":
      return exitCodes.notFound;
    case "CONFLICT":
      return exitCodes.conflict;
    case "BAD_REQUEST":
      return exitCodes.usage;
    case "NETWORK_ERROR":
    case "TIMEOUT":
    case "AGENT_UNAVAILABLE":
    case "NO_CAPACITY":
      return exitCodes.unavailable;
    default:
      return exitCodes.failure;
  }
}

/** Prints an error the way every command does, and returns the exit code to use. */
export function reportError(err: unknown, write: (line: string) => void): number {
  if (err instanceof CliError) {
    write(`wrenn: ${err.message}`);
    if (err.hint) write(`hint: ${err.hint}`);
    return err.exitCode;
  }
  if (err instanceof WrennError) {
    write(`wrenn: ${err.message}${err.status ? ` (${err.code}, HTTP ${err.status})` : ""}`);
    if (err.details) {
      for (const [field, message] of Object.entries(err.details)) write(`  ${field}: ${String(message)}`);
    }
    if (err.hint) write(`hint: ${err.hint}`);
    if (err.requestId && (err.status >= 500 || err.code === "AGENT_ERROR")) write(`request id: ${err.requestId}`);
    return exitCodeOf(err);
  }
  if (err instanceof Error && err.name === "AbortError") return 130;
  write(`wrenn: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  return exitCodes.failure;
}
