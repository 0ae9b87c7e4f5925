import { access, appendFile, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../logger.js";
import type { Clock } from "../sandboxes/clock.js";
import { systemClock } from "../sandboxes/clock.js";
import { assertSandboxId, SANDBOX_ID_PATTERN } from "../sandboxes/ids.js";

/**
 * Per-sandbox log of egress decisions (DNS questions, inspected 80/443 connections, and the TCP/UDP flows
 * the kernel decides, from agent/egress/flows.ts):
 * a ring of the latest entries in memory and a JSONL file under the agent's state dir, so the log
 * survives an agent restart and can be read for 24 h after the sandbox ended.
 *
 * The file is append-only: a decision is one line; a connection's completion (bytes, end) appends the
 * whole entry again with the same seq, and the last line of a seq wins on reload. It is rewritten with
 * just the ring's entries when it holds three rings' worth of lines.
 */

export type ConnectionProtocol = "tcp" | "udp" | "dns";
export type ConnectionVerdict = "allowed" | "denied";
/** Where the entry's name came from: the DNS question, the TLS SNI or the HTTP Host header. */
export type NameSource = "dns" | "sni" | "host";

export interface ConnectionEntry {
  /** 1, 2, 3, … per sandbox; never reused, also across agent restarts. */
  seq: number;
  /** Epoch milliseconds of the decision. */
  time: number;
  protocol: ConnectionProtocol;
  /** Destination address (for DNS: the first answer address, or "" when there is none). */
  address: string;
  port: number;
  name?: string;
  nameSource?: NameSource;
  verdict: ConnectionVerdict;
  /** The rule that decided (`*.example.com`, `0.0.0.0/0`, `default`, a blocked range). */
  rule: string;
  /** Which list the rule is in: allowOut, denyOut, default, internet-off, platform, no-name. */
  list: string;
  /** For DNS: every A address the answer carried (after the platform's blocks were removed). */
  addresses?: string[];
  /** Bytes from the sandbox to the destination. */
  bytesOut?: number;
  /** Bytes from the destination to the sandbox. */
  bytesIn?: number;
  /** Epoch milliseconds of the end: a connection's close; a DNS answer's or a denial's decision time. */
  endedAt?: number;
}

/** What a caller logs: the log assigns seq and (unless given) time. */
export type ConnectionDecision = Omit<ConnectionEntry, "seq" | "time"> & { time?: number };

export interface ConnectionQuery {
  /** Only entries with a larger seq (a cursor). */
  after?: number;
  limit: number;
  verdict?: ConnectionVerdict;
  /** Only entries decided at or after this epoch millisecond. */
  since?: number;
  protocol?: ConnectionProtocol;
}

export interface ConnectionLogOptions {
  /** Where the `<sandboxId>.jsonl` files live (config.layout.connectionsDir). */
  dir: string;
  logger: Logger;
  clock?: Clock;
  /** Entries kept per sandbox, in memory and on reload (default 10,000). */
  capacity?: number;
  /** How long a file is kept after its sandbox ended (default 24 h). */
  retentionMs?: number;
}

export const DEFAULT_LOG_CAPACITY = 10_000;
export const DEFAULT_LOG_RETENTION_MS = 24 * 3600 * 1000;
/** An ended sandbox's ring leaves memory this long after its end (its file stays until the retention). */
const ENDED_MEMORY_MS = 60_000;
/** A live sandbox's ring leaves memory after this long unused (reloaded from its file when next read). */
const IDLE_MEMORY_MS = 10 * 60_000;

interface Stream {
  /** Ascending by seq; at most capacity (trimmed in batches). */
  entries: ConnectionEntry[];
  nextSeq: number;
  /** Lines in the file, to know when to compact it. */
  fileLines: number;
  /** Lines waiting for the next write. */
  pending: string[];
  /** The write chain: appends and compactions in order. */
  writing: Promise<void>;
  flushScheduled: boolean;
  watchers: Set<Watcher>;
  /** Epoch ms the sandbox ended, if it did. */
  endedAt: number | undefined;
  /** Epoch ms of the last append, complete, list or watch. */
  usedAt: number;
  /** Connections logged and not completed yet: the ring stays in memory while any is open. */
  open: number;
}

interface Watcher {
  push(entry: ConnectionEntry): void;
  end(): void;
}

const copy = (e: ConnectionEntry): ConnectionEntry => ({ ...e, addresses: e.addresses && [...e.addresses] });

export class ConnectionLog {
  readonly #dir: string;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #capacity: number;
  readonly #retentionMs: number;
  readonly #streams = new Map<string, Promise<Stream>>();
  #dirReady: Promise<void> | undefined;

  constructor(options: ConnectionLogOptions) {
    this.#dir = options.dir;
    this.#logger = options.logger;
    this.#clock = options.clock ?? systemClock;
    this.#capacity = options.capacity ?? DEFAULT_LOG_CAPACITY;
    this.#retentionMs = options.retentionMs ?? DEFAULT_LOG_RETENTION_MS;
  }

  #file(sandboxId: string): string {
    return join(this.#dir, `${sandboxId}.jsonl`);
  }

  #endedFile(sandboxId: string): string {
    return join(this.#dir, `${sandboxId}.ended`);
  }

  #ensureDir(): Promise<void> {
    this.#dirReady ??= mkdir(this.#dir, { recursive: true, mode: 0o700 }).then(() => undefined);
    return this.#dirReady;
  }

  /** The sandbox's stream, loaded from its file on first use. */
  async #stream(sandboxId: string): Promise<Stream> {
    assertSandboxId(sandboxId);
    let loading = this.#streams.get(sandboxId);
    if (!loading) {
      loading = this.#load(sandboxId);
      this.#streams.set(sandboxId, loading);
      loading.catch(() => this.#streams.delete(sandboxId));
    }
    const stream = await loading;
    stream.usedAt = this.#clock.now();
    return stream;
  }

  async #load(sandboxId: string): Promise<Stream> {
    const text = await readFile(this.#file(sandboxId), "utf8").catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return "";
      throw err;
    });
    const bySeq = new Map<number, ConnectionEntry>();
    let lines = 0;
    for (const line of text.split("\n")) {
      if (line === "") continue;
      lines++;
      try {
        const entry = JSON.parse(line) as ConnectionEntry;
        if (Number.isInteger(entry.seq) && entry.seq > 0) bySeq.set(entry.seq, entry);
      } catch {
        // A line torn by a crash mid-write: the entries before it are intact.
      }
    }
    const entries = [...bySeq.values()].sort((a, b) => a.seq - b.seq).slice(-this.#capacity);
    const ended = await readFile(this.#endedFile(sandboxId), "utf8").catch(() => undefined);
    const endedAt = ended === undefined ? undefined : Number(ended.trim()) || this.#clock.now();
    return {
      entries,
      nextSeq: Math.max(0, ...bySeq.keys()) + 1,
      fileLines: lines,
      pending: [],
      writing: Promise.resolve(),
      flushScheduled: false,
      watchers: new Set(),
      endedAt,
      usedAt: this.#clock.now(),
      open: 0,
    };
  }

  /** Logs a decision; returns the entry with its seq (pass it to `complete` when the connection closes). */
  async append(sandboxId: string, decision: ConnectionDecision): Promise<ConnectionEntry> {
    const stream = await this.#stream(sandboxId);
    const entry: ConnectionEntry = { ...decision, seq: stream.nextSeq++, time: decision.time ?? this.#clock.now() };
    if (entry.endedAt === undefined) stream.open++;
    stream.entries.push(entry);
    // Trim in batches so a busy sandbox does not shift a 10,000-entry array on every append.
    if (stream.entries.length > this.#capacity + Math.ceil(this.#capacity / 10)) {
      stream.entries.splice(0, stream.entries.length - this.#capacity);
    }
    this.#write(sandboxId, stream, entry);
    for (const w of stream.watchers) w.push(copy(entry));
    return copy(entry);
  }

  /** Completes a connection's entry: bytes each way and the end time. An entry gone from the ring is skipped. */
  async complete(
    sandboxId: string,
    seq: number,
    result: { bytesOut: number; bytesIn: number; endedAt?: number },
  ): Promise<void> {
    const stream = await this.#stream(sandboxId);
    const entry = findBySeq(stream.entries, seq);
    if (entry?.endedAt === undefined) stream.open = Math.max(0, stream.open - 1);
    if (!entry) return;
    entry.bytesOut = result.bytesOut;
    entry.bytesIn = result.bytesIn;
    entry.endedAt = result.endedAt ?? this.#clock.now();
    this.#write(sandboxId, stream, entry);
    for (const w of stream.watchers) w.push(copy(entry));
  }

  /** Entries in seq order, filtered; the next page starts after the last one returned. */
  async list(sandboxId: string, query: ConnectionQuery): Promise<ConnectionEntry[]> {
    const stream = await this.#stream(sandboxId);
    const out: ConnectionEntry[] = [];
    if (query.limit <= 0) return out;
    const start = query.after === undefined ? 0 : firstAfter(stream.entries, query.after);
    for (let i = start; i < stream.entries.length && out.length < query.limit; i++) {
      const e = stream.entries[i] as ConnectionEntry;
      if (query.since !== undefined && e.time < query.since) continue;
      if (query.verdict !== undefined && e.verdict !== query.verdict) continue;
      if (query.protocol !== undefined && e.protocol !== query.protocol) continue;
      out.push(copy(e));
    }
    return out;
  }

  /**
   * Entries after `after`, then new ones as they are logged, until `signal` aborts or the sandbox ends.
   * A connection's entry is yielded when decided and again (same seq, `endedAt` set) when it closes.
   */
  async *watch(sandboxId: string, after: number, signal: AbortSignal): AsyncGenerator<ConnectionEntry> {
    const stream = await this.#stream(sandboxId);
    const queue: ConnectionEntry[] = [];
    let ended = false;
    let wake: (() => void) | undefined;
    const watcher: Watcher = {
      push: (e) => {
        queue.push(e);
        wake?.();
      },
      end: () => {
        ended = true;
        wake?.();
      },
    };
    const onAbort = () => wake?.();
    // Registered and backlog taken in the same tick: nothing is missed and nothing repeated.
    stream.watchers.add(watcher);
    signal.addEventListener("abort", onAbort);
    for (const e of stream.entries.slice(firstAfter(stream.entries, after))) queue.push(copy(e));
    if (stream.endedAt !== undefined) ended = true;
    try {
      while (!signal.aborted) {
        const next = queue.shift();
        if (next) {
          yield next;
          continue;
        }
        if (ended) return;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    } finally {
      stream.watchers.delete(watcher);
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** Marks the sandbox ended: watchers finish, and its file is removed `retentionMs` later by `sweep`. */
  async sandboxEnded(sandboxId: string): Promise<void> {
    if (!SANDBOX_ID_PATTERN.test(sandboxId)) return;
    const now = this.#clock.now();
    const loaded = this.#streams.get(sandboxId);
    const stream = loaded ? await loaded.catch(() => undefined) : undefined;
    if (stream) {
      stream.endedAt = now;
      for (const w of stream.watchers) w.end();
      await this.#flush(sandboxId, stream);
    } else if (
      !(await access(this.#file(sandboxId)).then(
        () => true,
        () => false,
      ))
    ) {
      return; // Nothing was ever logged for it.
    }
    await this.#ensureDir();
    await writeFile(this.#endedFile(sandboxId), `${now}\n`);
  }

  /**
   * Removes the files of sandboxes that ended more than `retentionMs` ago and drops from memory the
   * rings of ended sandboxes and of live ones unused for ten minutes (with no open connection). A file
   * whose sandbox is not live and never got an end mark (the agent was down when it ended) is marked
   * ended now.
   */
  async sweep(isLive: (sandboxId: string) => boolean = () => true): Promise<void> {
    const now = this.#clock.now();
    for (const [id, loaded] of this.#streams) {
      const stream = await loaded.catch(() => undefined);
      // A live sandbox's ring stays while a connection is open (its completion finds it); an ended
      // sandbox's connections were cut with its slot, and a late completion only appends a line.
      const unused = (st: Stream) =>
        st.watchers.size === 0 &&
        (st.endedAt !== undefined
          ? now - st.endedAt > ENDED_MEMORY_MS
          : st.open === 0 && now - st.usedAt > IDLE_MEMORY_MS);
      if (!stream || !unused(stream)) continue;
      await this.#flush(id, stream);
      // Checked again after the write: something may have been logged meanwhile.
      if (stream.pending.length === 0 && unused(stream)) this.#streams.delete(id);
    }
    const names = await readdir(this.#dir).catch(() => [] as string[]);
    const ids = new Set(names.map((n) => /^([a-z0-9]{20})\.(?:jsonl|ended)$/.exec(n)?.[1]).filter((id) => id));
    for (const id of ids) {
      if (id === undefined || isLive(id)) continue;
      const ended = await readFile(this.#endedFile(id), "utf8").catch(() => undefined);
      if (ended === undefined) {
        await this.sandboxEnded(id).catch(() => {});
        continue;
      }
      const endedAt = Number(ended.trim());
      if (!(now - endedAt >= this.#retentionMs) || this.#streams.has(id)) continue;
      await rm(this.#file(id), { force: true });
      await rm(this.#endedFile(id), { force: true });
      this.#logger.debug("connection log removed", { sandboxId: id });
    }
  }

  /** Sweeps every `intervalMs` until `signal` aborts. */
  startSweeper(signal: AbortSignal, isLive: (sandboxId: string) => boolean, intervalMs = 600_000): void {
    const run = () =>
      this.sweep(isLive).catch((err: unknown) => this.#logger.warn("connection log sweep failed", { err }));
    void run();
    const timer = setInterval(run, intervalMs);
    timer.unref();
    signal.addEventListener("abort", () => clearInterval(timer), { once: true });
  }

  /** Writes every pending line (on shutdown, and in tests). */
  async flush(): Promise<void> {
    for (const [id, loaded] of this.#streams) {
      const stream = await loaded.catch(() => undefined);
      if (stream) await this.#flush(id, stream);
    }
  }

  #write(sandboxId: string, stream: Stream, entry: ConnectionEntry): void {
    stream.pending.push(`${JSON.stringify(entry)}\n`);
    if (stream.flushScheduled) return;
    stream.flushScheduled = true;
    // One write per burst of decisions, not one per entry.
    setImmediate(() => {
      void this.#flush(sandboxId, stream);
    });
  }

  #flush(sandboxId: string, stream: Stream): Promise<void> {
    stream.writing = stream.writing.then(async () => {
      stream.flushScheduled = false;
      const lines = stream.pending.splice(0);
      if (lines.length === 0) return;
      try {
        await this.#ensureDir();
        if (stream.fileLines + lines.length > this.#capacity * 3) {
          // Compact: the ring's entries only (they include the pending ones), written aside then renamed.
          const tmp = `${this.#file(sandboxId)}.tmp`;
          const kept = stream.entries.slice(-this.#capacity);
          await writeFile(tmp, kept.map((e) => `${JSON.stringify(e)}\n`).join(""), { mode: 0o600 });
          await rename(tmp, this.#file(sandboxId));
          stream.fileLines = kept.length;
        } else {
          await appendFile(this.#file(sandboxId), lines.join(""), { mode: 0o600 });
          stream.fileLines += lines.length;
        }
      } catch (err) {
        this.#logger.warn("could not write the connection log", { sandboxId, err });
      }
    });
    return stream.writing;
  }
}

/** Index of the first entry with seq > after (entries ascend by seq). */
function firstAfter(entries: ConnectionEntry[], after: number): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((entries[mid] as ConnectionEntry).seq <= after) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function findBySeq(entries: ConnectionEntry[], seq: number): ConnectionEntry | undefined {
  const i = firstAfter(entries, seq - 1);
  const e = entries[i];
  return e?.seq === seq ? e : undefined;
}
