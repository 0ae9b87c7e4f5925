import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { invalidArgument } from "../errors.js";
import type { Logger } from "../logger.js";
import type { SandboxRecord } from "./record.js";

/**
 * The TTL reaper's acts, kept until the edge acknowledges them (HostAgentService.AcknowledgeReaped).
 * The edge records a reap only after its database write commits; until then the reap is reported
 * in every ListSandboxes, so a sweep that dies in between (or an agent restart) does not turn a
 * `timeout` into `lost`. The log lives in one file under the agent's state root, rewritten
 * atomically on every change, and is bounded in age and count so an edge that never acknowledges
 * (an older one, or none at all) cannot make it grow without limit.
 */

/** One act of the reaper on one sandbox. */
export interface Reap {
  /** "reap_" and 16 characters of [a-z0-9]; unique on this host. */
  reapId: string;
  /** Epoch ms when the reaper acted. */
  reapedAt: number;
  /** The sandbox as the reaper left it, without its secrets (envd token, env vars). */
  record: SandboxRecord;
}

/** How long and how many reaps are kept unacknowledged. */
export interface ReapRetention {
  maxAgeMs: number;
  maxCount: number;
}

/** One day covers an edge outage far longer than the sweep interval; the count caps the file (≈ 5 MB). */
export const DEFAULT_REAP_RETENTION: ReapRetention = { maxAgeMs: 24 * 3600_000, maxCount: 10_000 };

/** The form of a reap id. */
export const REAP_ID_PATTERN = /^reap_[a-z0-9]{16}$/;

const REAP_FILE = "reaps.json";
const ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";

/** Where the reap log of an agent with this state root lives. */
export function reapLogPath(stateRoot: string): string {
  return join(stateRoot, REAP_FILE);
}

function newReapId(): string {
  // 252 = 7 × 36: bytes at or above it are dropped so every character is equally likely.
  let id = "";
  while (id.length < 16) {
    for (const byte of randomBytes(24)) {
      if (byte < 252 && id.length < 16) id += ID_ALPHABET[byte % 36];
    }
  }
  return `reap_${id}`;
}

function isReap(value: unknown): value is Reap {
  if (typeof value !== "object" || value === null) return false;
  const r = value as Partial<Reap>;
  return (
    typeof r.reapId === "string" &&
    REAP_ID_PATTERN.test(r.reapId) &&
    typeof r.reapedAt === "number" &&
    typeof r.record === "object" &&
    r.record !== null &&
    typeof r.record.id === "string" &&
    typeof r.record.status === "string"
  );
}

export class ReapLog {
  readonly #file: string;
  readonly #logger: Logger;
  readonly #retention: ReapRetention;
  readonly #now: () => number;
  #reaps: Reap[] = [];
  /** The last write in flight; writes run one after another, each of the then-current list. */
  #writing: Promise<void> = Promise.resolve();

  constructor(options: { file: string; logger: Logger; retention?: Partial<ReapRetention>; now?: () => number }) {
    this.#file = options.file;
    this.#logger = options.logger;
    this.#retention = { ...DEFAULT_REAP_RETENTION, ...options.retention };
    this.#now = options.now ?? Date.now;
  }

  /**
   * Reads the reaps a previous agent left. A missing file is an empty log; an unreadable one is
   * moved aside (kept for the operator, not lost) and the log starts empty.
   */
  async load(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.#file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    try {
      const parsed: unknown = JSON.parse(text);
      if (!Array.isArray(parsed)) throw new Error("not a list");
      this.#reaps = parsed.filter(isReap);
      const dropped = parsed.length - this.#reaps.length;
      if (dropped > 0) this.#logger.warn("reap log had malformed entries; dropped them", { dropped });
    } catch (err) {
      const aside = `${this.#file}.corrupt-${this.#now()}`;
      await rename(this.#file, aside);
      this.#logger.warn("reap log unreadable; moved aside, starting empty", { file: aside, err });
      this.#reaps = [];
    }
    if (this.#prune() > 0) await this.#persist();
  }

  /** Records what the reaper did to `record` (a copy, without its secrets) and writes the log. */
  async add(record: SandboxRecord): Promise<Reap> {
    const reap: Reap = {
      reapId: newReapId(),
      reapedAt: this.#now(),
      record: { ...record, accessToken: "", envVars: {} },
    };
    this.#reaps.push(reap);
    this.#prune();
    await this.#persist();
    return reap;
  }

  /** The unacknowledged reaps, oldest first (expired ones are dropped first). */
  pending(): readonly Reap[] {
    if (this.#prune() > 0) {
      void this.#persist().catch((err) => this.#logger.error("writing the reap log failed", { err }));
    }
    return [...this.#reaps];
  }

  /**
   * Drops the named reaps and writes the log; returns how many it held. Ids it does not hold are
   * ignored (acknowledged before, or expired); ids of the wrong form are refused before anything
   * changes.
   */
  async acknowledge(reapIds: readonly string[]): Promise<number> {
    if (reapIds.length > this.#retention.maxCount) {
      throw invalidArgument(
        "TOO_MANY_REAP_IDS",
        `at most ${this.#retention.maxCount} reap ids per call, got ${reapIds.length}`,
      );
    }
    for (const id of reapIds) {
      if (!REAP_ID_PATTERN.test(id)) {
        throw invalidArgument(
          "INVALID_REAP_ID",
          `reap id must be "reap_" and 16 characters of [a-z0-9], got ${JSON.stringify(id.slice(0, 40))}`,
        );
      }
    }
    const drop = new Set(reapIds);
    const before = this.#reaps.length;
    this.#reaps = this.#reaps.filter((r) => !drop.has(r.reapId));
    const removed = before - this.#reaps.length;
    if (removed > 0) await this.#persist();
    return removed;
  }

  /** Drops reaps past the age limit, then the oldest beyond the count limit; returns how many. */
  #prune(): number {
    const before = this.#reaps.length;
    const oldest = this.#now() - this.#retention.maxAgeMs;
    let kept = this.#reaps.filter((r) => r.reapedAt >= oldest);
    if (kept.length > this.#retention.maxCount) kept = kept.slice(kept.length - this.#retention.maxCount);
    const dropped = before - kept.length;
    if (dropped > 0) {
      this.#reaps = kept;
      // The edge will record those sandboxes as `lost`; say so where the operator looks.
      this.#logger.warn("unacknowledged reaps expired", { dropped, retention: this.#retention });
    }
    return dropped;
  }

  #persist(): Promise<void> {
    const write = async () => {
      await mkdir(dirname(this.#file), { recursive: true });
      const temp = `${this.#file}.${process.pid}.tmp`;
      await writeFile(temp, JSON.stringify(this.#reaps), { mode: 0o600 });
      await rename(temp, this.#file);
    };
    const next = this.#writing.then(write, write);
    this.#writing = next.catch(() => {});
    return next;
  }
}
