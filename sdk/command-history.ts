import type { ConnectionOptions } from "./config.js";
import { ApiClient, segment } from "./http.js";

/** The first and last 64 KiB of one output stream (as text) and its true size in bytes. */
export interface CommandOutputInfo {
  head: string;
  /** The last 64 KiB after the head; empty when everything fit in the head. */
  tail: string;
  bytes: number;
}

/** One command of a sandbox's history (`GET /v1/sandboxes/{id}/commands`, `GET /v1/commands`). */
export interface CommandInfo {
  commandId: string;
  sandboxId: string;
  commandLine: string;
  cmd: string;
  args: string[];
  user: string;
  cwd: string;
  pid: number;
  startedAt: string;
  /** Null while it runs. */
  endedAt: string | null;
  /** Null while it runs; -1 when killed by a signal. */
  exitCode: number | null;
  error: string | null;
  durationMs: number | null;
  stdout: CommandOutputInfo;
  stderr: CommandOutputInfo;
  background: boolean;
  /** A background command's callback: `pending`, `queued` or `done`; null for other commands. */
  callbackState: string | null;
}

/** One page of commands; pass `nextToken` back for the next. */
export interface CommandPageInfo {
  commands: CommandInfo[];
  nextToken: string | null;
}

/** What a background start answers at once. */
export interface BackgroundCommandInfo {
  commandId: string;
  sandboxId: string;
  pid: number;
  /** Whether a callback will be delivered when the command ends. */
  callback: boolean;
}

/** Options of a page of history or search. */
export interface CommandPageOptions {
  /** 1 to 200; default 50. */
  limit?: number;
  nextToken?: string;
}

/** A page of one sandbox's command history, newest first. */
export function listCommandHistory(
  api: ApiClient,
  sandboxId: string,
  options: CommandPageOptions = {},
): Promise<CommandPageInfo> {
  return api.json<CommandPageInfo>("GET", `/v1/sandboxes/${segment(sandboxId)}/commands`, {
    query: {
      limit: options.limit === undefined ? undefined : String(options.limit),
      nextToken: options.nextToken,
    },
  });
}

/**
 * Searches the team's command history (command lines and output; words, "phrases", -not, or), best
 * match first. Works after the sandboxes ended.
 */
export function searchCommands(
  q: string,
  options: CommandPageOptions & ConnectionOptions & { sandboxId?: string } = {},
): Promise<CommandPageInfo> {
  const { limit, nextToken, sandboxId, ...connection } = options;
  return new ApiClient(connection).json<CommandPageInfo>("GET", "/v1/commands", {
    query: { q, limit: limit === undefined ? undefined : String(limit), nextToken, sandboxId },
  });
}
