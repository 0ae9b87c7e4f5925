import { sql } from "drizzle-orm";
import {
  bigint,
  boolean,
  customType,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
} from "drizzle-orm/pg-core";
import { teams } from "./teams.js";

/** Postgres's full-text document type (drizzle has no builtin for it). */
const tsvector = customType<{ data: string }>({ dataType: () => "tsvector" });

/** Characters of each output edge that go into the search document (bounds the tsvector far below its 1 MB limit). */
export const SEARCH_EDGE_CHARS = 32_768;

/**
 * The command history (issue 22, docs/command-history.md): every process envd ran in a team's
 * sandboxes, from the agents' command records (edge/services/telemetry/collect.ts), kept after the
 * sandbox ended for `WRENN_COMMAND_HISTORY_DAYS`. Output is the first and last 64 KiB of stdout and
 * stderr as text (invalid UTF-8 replaced, NULs dropped) with the true byte counts. A background exec
 * writes its row when it starts (with its callback URL), so a callback survives the client leaving
 * and an edge restart; the record fills it in when the command ended.
 */
export const commands = pgTable(
  "commands",
  {
    teamId: text("team_id")
      .notNull()
      .references(() => teams.id, { onDelete: "cascade" }),
    /** No foreign key: the history outlives the sandbox row's changes (and is pruned by age, not by the sandbox). */
    sandboxId: text("sandbox_id").notNull(),
    /** The edge's id (a background exec's) or the agent's (`cmd_…`, `envd-…`). */
    commandId: text("command_id").notNull(),
    /** Program and arguments joined by spaces, as searched and listed. */
    commandLine: text("command_line").notNull(),
    cmd: text("cmd").notNull(),
    args: jsonb("args").$type<string[]>().notNull().default([]),
    user: text("user").notNull().default(""),
    cwd: text("cwd").notNull().default(""),
    pid: integer("pid").notNull().default(0),
    startedAt: timestamp("started_at", { withTimezone: true, mode: "date", precision: 3 }).notNull(),
    /** Null while it runs (a background exec whose record has not arrived yet). */
    endedAt: timestamp("ended_at", { withTimezone: true, mode: "date", precision: 3 }),
    /** -1 when killed by a signal; null while it runs. */
    exitCode: integer("exit_code"),
    error: text("error").notNull().default(""),
    stdoutHead: text("stdout_head").notNull().default(""),
    stdoutTail: text("stdout_tail").notNull().default(""),
    stdoutBytes: bigint("stdout_bytes", { mode: "number" }).notNull().default(0),
    stderrHead: text("stderr_head").notNull().default(""),
    stderrTail: text("stderr_tail").notNull().default(""),
    stderrBytes: bigint("stderr_bytes", { mode: "number" }).notNull().default(0),
    /** Started by `POST /v1/sandboxes/{id}/exec` with `background: true` (its end is a `command.finished` event). */
    background: boolean("background").notNull().default(false),
    /** Where the result goes when it ends (checked against the webhook URL policy when it was given). */
    callbackUrl: text("callback_url"),
    /**
     * A background command's end: `pending` until its record arrives, then `queued` (its callback handed
     * to the webhook delivery loop) or `done` (no callback URL; its `command.finished` event recorded).
     * Null for other commands.
     */
    callbackState: text("callback_state", { enum: ["pending", "queued", "done"] }),
    createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
    /** Full-text document over the command line and the output edges (`simple`: no stemming, any language). */
    search: tsvector("search").generatedAlwaysAs(
      sql`to_tsvector('simple'::regconfig, left(command_line, 8192) || ' ' || left(stdout_head, ${sql.raw(String(SEARCH_EDGE_CHARS))}) || ' ' || left(stdout_tail, ${sql.raw(String(SEARCH_EDGE_CHARS))}) || ' ' || left(stderr_head, ${sql.raw(String(SEARCH_EDGE_CHARS))}) || ' ' || left(stderr_tail, ${sql.raw(String(SEARCH_EDGE_CHARS))}))`,
    ),
  },
  (t) => [
    primaryKey({ columns: [t.sandboxId, t.commandId] }),
    index("commands_team_started_idx").on(t.teamId, t.startedAt),
    index("commands_sandbox_started_idx").on(t.sandboxId, t.startedAt),
    index("commands_search_idx").using("gin", t.search),
    index("commands_created_idx").on(t.createdAt),
  ],
);

/** A row of `commands`. */
export type CommandRow = typeof commands.$inferSelect;
