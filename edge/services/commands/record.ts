import { timestampMs } from "@bufbuild/protobuf/wkt";
import { and, eq, inArray, isNull, sql } from "drizzle-orm";
import type { CommandRecord } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import type { Database } from "../../db/client.js";
import { type CommandRow, commands } from "../../db/schema/index.js";
import { recordEvent } from "../events/record.js";
import { enqueueCallback } from "../webhooks/enqueue.js";

/** Bytes of one output edge the edge keeps (the agent sends at most this; a larger one is cut). */
export const EDGE_BYTES = 64 * 1024;
const INSERT_CHUNK = 50;

const lenient = new TextDecoder("utf-8", { fatal: false });

/**
 * Output bytes as text for Postgres: invalid UTF-8 becomes U+FFFD and NUL (which a text column cannot
 * hold) is dropped. The byte counts stay the command's own.
 */
export function outputText(bytes: Uint8Array): string {
  const cut = bytes.length > EDGE_BYTES ? bytes.subarray(0, EDGE_BYTES) : bytes;
  return lenient.decode(cut).replaceAll("\u0000", "");
}

/** Guest text (command line, user, cwd) for a text column: cut and without NULs. */
function clean(s: string, max: number): string {
  return (s.length > max ? s.slice(0, max) : s).replaceAll("\u0000", "");
}

/** The command line as listed and searched: the program and its arguments joined by spaces. */
export function commandLineOf(cmd: string, args: readonly string[]): string {
  return clean([cmd, ...args].join(" "), 20_000);
}

/** The payload of `command.finished` (event and callback): who ran what, how it ended, the output's edges. */
export function finishedData(row: CommandRow): Record<string, unknown> {
  const durationMs = row.endedAt ? Math.max(0, row.endedAt.getTime() - row.startedAt.getTime()) : 0;
  return {
    commandId: row.commandId,
    sandboxId: row.sandboxId,
    commandLine: row.commandLine,
    exitCode: row.exitCode,
    error: row.error === "" ? null : row.error,
    startedAt: row.startedAt.toISOString(),
    endedAt: row.endedAt?.toISOString() ?? null,
    durationMs,
    stdout: { head: row.stdoutHead, tail: row.stdoutTail, bytes: row.stdoutBytes },
    stderr: { head: row.stderrHead, tail: row.stderrTail, bytes: row.stderrBytes },
  };
}

/**
 * Stores the command records an agent reported for sandboxes it runs (`teamOf`: the sandboxes the
 * database places on that host, with their teams; others are dropped). A record fills in the row a
 * background exec wrote at its start, or makes a new one; a finished row is never overwritten (a
 * re-read after an agent restart changes nothing). Each finished background command records its
 * `command.finished` event, and one with a callback URL queues its signed callback — in the same
 * transaction that marks it queued, so it is sent exactly once whatever races or restarts.
 */
export async function storeCommandRecords(
  db: Database,
  records: readonly CommandRecord[],
  teamOf: ReadonlyMap<string, string>,
): Promise<number> {
  const rows = records
    .filter((r) => teamOf.has(r.sandboxId) && /^[A-Za-z0-9_-]{1,64}$/.test(r.commandId))
    .map((r) => {
      const endedAt = r.endedAt ? new Date(timestampMs(r.endedAt)) : null;
      const startedAt = r.startedAt ? new Date(timestampMs(r.startedAt)) : (endedAt ?? new Date());
      const args = r.args.slice(0, 1024).map((a) => clean(a, 16_384));
      return {
        teamId: teamOf.get(r.sandboxId) as string,
        sandboxId: r.sandboxId,
        commandId: r.commandId,
        commandLine: commandLineOf(r.cmd, args),
        cmd: clean(r.cmd, 4096),
        args,
        user: clean(r.user, 64),
        cwd: clean(r.cwd, 4096),
        pid: r.pid,
        startedAt,
        endedAt,
        exitCode: r.exitCode ?? null,
        error: clean(r.error, 1024),
        stdoutHead: outputText(r.stdoutHead),
        stdoutTail: outputText(r.stdoutTail),
        stdoutBytes: Number(r.stdoutBytes),
        stderrHead: outputText(r.stderrHead),
        stderrTail: outputText(r.stderrTail),
        stderrBytes: Number(r.stderrBytes),
      };
    });
  for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
    const chunk = rows.slice(i, i + INSERT_CHUNK);
    await db.transaction(async (tx) => {
      await tx
        .insert(commands)
        .values(chunk)
        .onConflictDoUpdate({
          target: [commands.sandboxId, commands.commandId],
          set: {
            commandLine: sql`excluded.command_line`,
            cmd: sql`excluded.cmd`,
            args: sql`excluded.args`,
            user: sql`excluded.user`,
            cwd: sql`excluded.cwd`,
            pid: sql`excluded.pid`,
            startedAt: sql`excluded.started_at`,
            endedAt: sql`excluded.ended_at`,
            exitCode: sql`excluded.exit_code`,
            error: sql`excluded.error`,
            stdoutHead: sql`excluded.stdout_head`,
            stdoutTail: sql`excluded.stdout_tail`,
            stdoutBytes: sql`excluded.stdout_bytes`,
            stderrHead: sql`excluded.stderr_head`,
            stderrTail: sql`excluded.stderr_tail`,
            stderrBytes: sql`excluded.stderr_bytes`,
          },
          // Only a row still waiting for its end (one a background exec wrote); a finished one stays as it is.
          setWhere: isNull(commands.endedAt),
        });
      await finishBackground(tx, chunk);
    });
  }
  return rows.length;
}

/**
 * Background commands of `chunk` that have just ended: their `command.finished` events, and their
 * callbacks moved from pending to queued (the update's row lock makes two concurrent pulls queue one).
 */
async function finishBackground(
  tx: Database,
  chunk: readonly { sandboxId: string; commandId: string; endedAt: Date | null }[],
): Promise<void> {
  const ended = chunk.filter((r) => r.endedAt !== null);
  if (ended.length === 0) return;
  const bySandbox = new Map<string, string[]>();
  for (const r of ended) bySandbox.set(r.sandboxId, [...(bySandbox.get(r.sandboxId) ?? []), r.commandId]);
  for (const [sandboxId, ids] of bySandbox) {
    // A background row is claimed once: its state leaves `pending` in this update (under the row's lock).
    const finished = await tx
      .update(commands)
      .set({ callbackState: sql`case when ${commands.callbackUrl} is null then 'done' else 'queued' end` })
      .where(
        and(
          eq(commands.sandboxId, sandboxId),
          inArray(commands.commandId, ids),
          eq(commands.background, true),
          eq(commands.callbackState, "pending"),
          sql`${commands.endedAt} is not null`,
        ),
      )
      .returning();
    for (const row of finished) {
      const data = finishedData(row);
      await recordEvent(tx, { teamId: row.teamId, type: "command.finished", sandboxId, actor: "host", data });
      if (row.callbackUrl && row.callbackState === "queued") {
        await enqueueCallback(tx, {
          teamId: row.teamId,
          url: row.callbackUrl,
          event: { type: "command.finished", sandboxId, data },
        });
      }
    }
  }
}
