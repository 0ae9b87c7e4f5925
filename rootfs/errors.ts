/**
 * A build failure the user can act on: what went wrong, and a hint for what to do about it.
 * The CLI prints both and exits non-zero; nothing half-built is left where the agent looks.
 */
export class BuildError extends Error {
  readonly hint: string | undefined;
  constructor(message: string, hint?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BuildError";
    this.hint = hint;
  }
}
