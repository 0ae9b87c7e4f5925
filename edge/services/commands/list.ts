import { and, desc, eq, lt, or, sql } from "drizzle-orm";
import { type CommandRow, commands, sandboxes } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { fromBase64Url, toBase64Url } from "../crypto.js";
import { BadRequestError, NotFoundError } from "../errors.js";
import { sandboxIdPattern } from "../ids.js";
import { pullFresh } from "../telemetry/read.js";

/** One command of the history, as the API shows it. */
export interface CommandView {
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
  stdout: { head: string; tail: string; bytes: number };
  stderr: { head: string; tail: string; bytes: number };
  background: boolean;
  /** A background command's callback: `pending`, `queued` (handed to delivery) or `done`; null otherwise. */
  callbackState: string | null;
}

export function toCommandView(row: CommandRow): CommandView {
  return {
    commandId: row.commandId,
    sandboxId: row.sandboxId,
    commandLine: row.commandLine,
    cmd: row.cmd,
    args: row.args,
    user: row.user,
    cwd: row.cwd,
    pid: row.pid,
    startedAt: row.startedAt.toISOString(),
    endedAt: row.endedAt?.toISOString() ?? null,
    exitCode: row.exitCode,
    error: row.error === "" ? null : row.error,
    durationMs: row.endedAt ? Math.max(0, row.endedAt.getTime() - row.startedAt.getTime()) : null,
    stdout: { head: row.stdoutHead, tail: row.stdoutTail, bytes: row.stdoutBytes },
    stderr: { head: row.stderrHead, tail: row.stderrTail, bytes: row.stderrBytes },
    background: row.background,
    callbackState: row.callbackState,
  };
}

/** A page of commands. */
export interface CommandPage {
  commands: CommandView[];
  nextToken: string | null;
}

function badToken(): BadRequestError {
  return new BadRequestError("nextToken is not a token this API issued", { nextToken: "invalid" });
}

function decodeToken(token: string): unknown[] {
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(fromBase64Url(token)));
    if (Array.isArray(parsed)) return parsed;
  } catch {
    // fall through
  }
  throw badToken();
}

const encodeToken = (v: unknown[]) => toBase64Url(new TextEncoder().encode(JSON.stringify(v)));

/**
 * A sandbox's commands, newest first (by start, then id), also after the sandbox ended. Another
 * team's sandbox answers 404, as an unknown id does; the team filter is in every query.
 */
export async function listSandboxCommands(
  ctx: TeamContext,
  sandboxId: string,
  input: { limit: number; nextToken?: string | undefined },
): Promise<CommandPage> {
  if (!sandboxIdPattern.test(sandboxId)) throw new NotFoundError("sandbox", sandboxId);
  const [sandbox] = await ctx.db
    .select()
    .from(sandboxes)
    .where(and(eq(sandboxes.id, sandboxId), eq(sandboxes.teamId, ctx.principal.teamId)))
    .limit(1);
  if (!sandbox) {
    // The sandbox's row may be gone while its history is kept; with neither, the id is unknown to this
    // team (another team's sandbox included): 404, as every sandbox route answers.
    const [kept] = await ctx.db
      .select({ id: commands.commandId })
      .from(commands)
      .where(and(eq(commands.teamId, ctx.principal.teamId), eq(commands.sandboxId, sandboxId)))
      .limit(1);
    if (!kept) throw new NotFoundError("sandbox", sandboxId);
  } else if (!input.nextToken) {
    // The first page reads what the agent holds now (as logs do), not only what the last sweep stored.
    await pullFresh(ctx, sandbox);
  }
  let beyond = sql`true`;
  if (input.nextToken) {
    const [at, id] = decodeToken(input.nextToken);
    if (typeof at !== "string" || typeof id !== "string" || Number.isNaN(Date.parse(at))) throw badToken();
    const when = new Date(at);
    beyond = or(lt(commands.startedAt, when), and(eq(commands.startedAt, when), lt(commands.commandId, id))) ?? beyond;
  }
  const rows = await ctx.db
    .select()
    .from(commands)
    .where(and(eq(commands.teamId, ctx.principal.teamId), eq(commands.sandboxId, sandboxId), beyond))
    .orderBy(desc(commands.startedAt), desc(commands.commandId))
    .limit(input.limit + 1);
  const page = rows.slice(0, input.limit);
  const last = page.at(-1);
  return {
    commands: page.map(toCommandView),
    nextToken: rows.length > input.limit && last ? encodeToken([last.startedAt.toISOString(), last.commandId]) : null,
  };
}

/** Longest accepted search text. */
export const MAX_QUERY_CHARS = 500;

/**
 * Team-wide full-text search over command lines and output (Postgres `websearch_to_tsquery`, the
 * `simple` configuration: words as written, no stemming), best match first (`ts_rank`), then newest.
 * The page token is the offset of the next page in that order.
 */
export async function searchCommands(
  ctx: TeamContext,
  input: { q: string; limit: number; nextToken?: string | undefined; sandboxId?: string | undefined },
): Promise<CommandPage> {
  const q = input.q.trim();
  if (q === "") throw new BadRequestError("q must name at least one word to search for", { q: "empty" });
  if (q.length > MAX_QUERY_CHARS) {
    throw new BadRequestError(`q is longer than ${MAX_QUERY_CHARS} characters`, { q: "too long" });
  }
  let offset = 0;
  if (input.nextToken) {
    const [kind, n] = decodeToken(input.nextToken);
    if (kind !== "search" || typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) throw badToken();
    offset = n;
  }
  const query = sql`websearch_to_tsquery('simple'::regconfig, ${q})`;
  const rows = await ctx.db
    .select()
    .from(commands)
    .where(
      and(
        eq(commands.teamId, ctx.principal.teamId),
        input.sandboxId ? eq(commands.sandboxId, input.sandboxId) : undefined,
        sql`${commands.search} @@ ${query}`,
      ),
    )
    .orderBy(sql`ts_rank(${commands.search}, ${query}) desc`, desc(commands.startedAt), desc(commands.commandId))
    .limit(input.limit + 1)
    .offset(offset);
  const page = rows.slice(0, input.limit);
  return {
    commands: page.map(toCommandView),
    nextToken: rows.length > input.limit ? encodeToken(["search", offset + page.length]) : null,
  };
}
