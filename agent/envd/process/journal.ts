import { randomBytes } from "node:crypto";

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
}

/** Entries kept; the agent pulls every few seconds, so this covers bursts of short commands. */
export const JOURNAL_CAPACITY = 2000;
/** Entries in one answer. */
export const JOURNAL_PAGE = 500;
/** Arguments can hold long scripts; the log keeps their start only. */
const ARGS_MAX_CHARS = 512;

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
    end: { exitCode: number; status: string },
  ): void {
    this.#push({
      kind: "end",
      pid: p.pid,
      cmd: p.cmd,
      args: joinArgs(p.args),
      user: p.user,
      tag: p.tag,
      exitCode: end.exitCode,
      status: end.status,
    });
  }

  /** Entries after `after`, oldest first, at most {@link JOURNAL_PAGE}; `next` is the cursor to pass next time. */
  since(after: number): { epoch: string; events: ProcessJournalEntry[]; next: number } {
    const events = this.#entries.filter((e) => e.seq > after).slice(0, JOURNAL_PAGE);
    return { epoch: this.epoch, events, next: events.at(-1)?.seq ?? Math.max(after, 0) };
  }

  #push(entry: Omit<ProcessJournalEntry, "seq" | "ts">): void {
    const full: ProcessJournalEntry = { seq: ++this.#seq, ts: this.now(), ...entry };
    if (full.tag === undefined) delete full.tag;
    this.#entries.push(full);
    if (this.#entries.length > JOURNAL_CAPACITY) this.#entries.splice(0, this.#entries.length - JOURNAL_CAPACITY);
  }
}

function joinArgs(args: readonly string[]): string {
  const joined = args.join(" ");
  return joined.length > ARGS_MAX_CHARS ? `${joined.slice(0, ARGS_MAX_CHARS)}…` : joined;
}
