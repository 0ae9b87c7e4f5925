import { randomBytes } from "node:crypto";
import { CAPTURE_EDGE_BYTES, type OutputCapture } from "./capture.js";

/** One process start or end, as the host agent reads it from `GET /wrenn/events`. */
export interface ProcessJournalEntry {
  seq: number;
  /** Milliseconds since the epoch, guest clock. */
  ts: number;
  kind: "start" | "end";
  pid: number;
  cmd: string;
  /** The arguments joined by spaces, cut at {@link ARGS_MAX_CHARS}. */
  args: string;
  user: string;
  tag?: string;
  /** Set on `end`: the exit code (-1 for a signal) and Go's status text ("exit status 1", "signal: killed"). */
  exitCode?: number;
  status?: string;
  /** Set on `end` (issue 22's command history): the whole command and how it ran; see {@link JournalCommand}. */
  command?: JournalCommand;
}

/**
 * What an `end` entry carries for the command history: the arguments one by one, the working
 * directory, start and end times, and the first and last {@link CAPTURE_EDGE_BYTES} of stdout and
 * stderr (base64) with their total sizes. A PTY's output is stdout.
 */
export interface JournalCommand {
  argv: string[];
  cwd: string;
  /** Milliseconds since the epoch, guest clock. */
  startedAt: number;
  endedAt: number;
  error: string;
  stdoutHead: string;
  stdoutTail: string;
  stdoutBytes: number;
  stderrHead: string;
  stderrTail: string;
  stderrBytes: number;
  /** The output was dropped to keep envd's memory bounded (the journal held too much unread output). */
  outputDropped?: boolean;
}

/** The facts of a process the journal records at its end. */
export interface JournalProcessEnd {
  exitCode: number;
  status: string;
  error?: string | undefined;
  cwd?: string;
  startedAt?: number;
  output?: OutputCapture;
}

/** Entries kept; the agent pulls every few seconds, so this covers bursts of short commands. */
export const JOURNAL_CAPACITY = 2000;
/** Entries in one answer. */
export const JOURNAL_PAGE = 500;
/** Arguments can hold long scripts; the log keeps their start only. */
const ARGS_MAX_CHARS = 512;
/** The command history keeps more of them: at most this many characters of arguments in all. */
const ARGV_MAX_CHARS = 16 * 1024;
/**
 * Captured output the journal holds at most, over all its entries; past it the oldest entries lose
 * their output (not their facts). The agent reads every few seconds, so this is many commands' worth.
 */
export const JOURNAL_OUTPUT_MAX_BYTES = 32 * 1024 * 1024;
/** Captured output (base64 characters) in one answer at most, so a page stays well under the agent's 1 MiB read. */
export const JOURNAL_PAGE_OUTPUT_CHARS = 384 * 1024;

/**
 * A bounded ring of process starts and ends, so the host agent can build the sandbox's log (E2B's
 * `/v2/sandboxes/{id}/logs`) from processes the SDK started straight through envd, which the agent
 * never sees otherwise. `epoch` changes with every envd start so the agent knows its cursor is void.
 */
export class ProcessJournal {
  readonly epoch = randomBytes(8).toString("hex");
  readonly #entries: ProcessJournalEntry[] = [];
  #seq = 0;

  constructor(private readonly now: () => number = Date.now) {}

  started(p: { pid: number; cmd: string; args: readonly string[]; user: string; tag?: string | undefined }): void {
    this.#push({ kind: "start", pid: p.pid, cmd: p.cmd, args: joinArgs(p.args), user: p.user, tag: p.tag });
  }

  ended(
    p: { pid: number; cmd: string; args: readonly string[]; user: string; tag?: string | undefined },
    end: JournalProcessEnd,
  ): void {
    const entry: Omit<ProcessJournalEntry, "seq" | "ts"> = {
      kind: "end",
      pid: p.pid,
      cmd: p.cmd,
      args: joinArgs(p.args),
      user: p.user,
      tag: p.tag,
      exitCode: end.exitCode,
      status: end.status,
    };
    if (end.output !== undefined) {
      const { stdout, stderr } = end.output;
      entry.command = {
        argv: cutArgv(p.args),
        cwd: end.cwd ?? "",
        startedAt: end.startedAt ?? this.now(),
        endedAt: this.now(),
        error: end.error ?? "",
        stdoutHead: stdout.head().toString("base64"),
        stdoutTail: stdout.tail().toString("base64"),
        stdoutBytes: stdout.total,
        stderrHead: stderr.head().toString("base64"),
        stderrTail: stderr.tail().toString("base64"),
        stderrBytes: stderr.total,
      };
      this.#outputChars += outputChars(entry.command);
    }
    this.#push(entry);
  }

  /**
   * Entries after `after`, oldest first, at most {@link JOURNAL_PAGE} and about
   * {@link JOURNAL_PAGE_OUTPUT_CHARS} of output (always at least one entry); `next` is the cursor to pass next time.
   */
  since(after: number): { epoch: string; events: ProcessJournalEntry[]; next: number } {
    const events: ProcessJournalEntry[] = [];
    let chars = 0;
    for (const e of this.#entries) {
      if (e.seq <= after) continue;
      const size = e.command ? outputChars(e.command) + e.command.argv.reduce((n, a) => n + a.length, 0) : 0;
      if (events.length >= JOURNAL_PAGE || (events.length > 0 && chars + size > JOURNAL_PAGE_OUTPUT_CHARS)) break;
      chars += size;
      events.push(e);
    }
    return { epoch: this.epoch, events, next: events.at(-1)?.seq ?? Math.max(after, 0) };
  }

  /** Captured output (base64 characters) the journal holds now. */
  get outputChars(): number {
    return this.#outputChars;
  }

  #outputChars = 0;

  #push(entry: Omit<ProcessJournalEntry, "seq" | "ts">): void {
    const full: ProcessJournalEntry = { seq: ++this.#seq, ts: this.now(), ...entry };
    if (full.tag === undefined) delete full.tag;
    this.#entries.push(full);
    if (this.#entries.length > JOURNAL_CAPACITY) {
      for (const gone of this.#entries.splice(0, this.#entries.length - JOURNAL_CAPACITY)) {
        if (gone.command) this.#outputChars -= outputChars(gone.command);
      }
    }
    // Over the budget: the oldest entries give up their output first.
    for (const e of this.#entries) {
      if (this.#outputChars <= (JOURNAL_OUTPUT_MAX_BYTES * 4) / 3) break;
      const c = e.command;
      if (!c || c.outputDropped) continue;
      this.#outputChars -= outputChars(c);
      c.stdoutHead = c.stdoutTail = c.stderrHead = c.stderrTail = "";
      c.outputDropped = true;
    }
  }
}

/** The base64 characters of a command's captured output. */
function outputChars(c: JournalCommand): number {
  return c.stdoutHead.length + c.stdoutTail.length + c.stderrHead.length + c.stderrTail.length;
}

/** Bytes of one captured edge (head or tail) at most, for readers that check what they got. */
export const JOURNAL_EDGE_BYTES = CAPTURE_EDGE_BYTES;

/** The arguments while they fit in {@link ARGV_MAX_CHARS} (the last one cut). */
function cutArgv(args: readonly string[]): string[] {
  const kept: string[] = [];
  let room = ARGV_MAX_CHARS;
  for (const a of args) {
    if (room <= 0) break;
    kept.push(a.length > room ? a.slice(0, room) : a);
    room -= a.length;
  }
  return kept;
}

function joinArgs(args: readonly string[]): string {
  const joined = args.join(" ");
  return joined.length > ARGS_MAX_CHARS ? `${joined.slice(0, ARGS_MAX_CHARS)}…` : joined;
}
