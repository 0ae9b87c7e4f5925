import { randomBytes } from "node:crypto";

/** One resource sample of a running sandbox (envd's `/metrics`, stamped with the agent's clock). */
export interface TelemetrySample {
  seq: number;
  sandboxId: string;
  timeMs: number;
  cpuCount: number;
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  memCache: number;
  diskUsed: number;
  diskTotal: number;
}

export type TelemetryLevel = "debug" | "info" | "warn" | "error";

/** One line of a sandbox's log: a process start or end, or an event the agent saw. */
export interface TelemetryLog {
  seq: number;
  sandboxId: string;
  timeMs: number;
  level: TelemetryLevel;
  message: string;
  fields: Record<string, string>;
}

/** One finished process of a sandbox for the command history (issue 22), as the sampler checked it. */
export interface TelemetryCommand {
  seq: number;
  sandboxId: string;
  commandId: string;
  cmd: string;
  args: string[];
  user: string;
  cwd: string;
  pid: number;
  startedAtMs: number;
  endedAtMs: number;
  exitCode: number;
  error: string;
  stdoutHead: Uint8Array;
  stdoutTail: Uint8Array;
  stdoutBytes: number;
  stderrHead: Uint8Array;
  stderrTail: Uint8Array;
  stderrBytes: number;
}

/** The bytes a command record holds (its output and its strings), for the store's budgets. */
export function commandBytes(c: Omit<TelemetryCommand, "seq">): number {
  return (
    c.stdoutHead.byteLength +
    c.stdoutTail.byteLength +
    c.stderrHead.byteLength +
    c.stderrTail.byteLength +
    c.cmd.length +
    c.args.reduce((n, a) => n + a.length, 0) +
    c.cwd.length +
    c.error.length +
    256
  );
}

export interface TelemetryLimits {
  /** Samples kept per sandbox (the oldest go first). */
  samplesPerSandbox: number;
  /** Log entries kept per sandbox. */
  logsPerSandbox: number;
  /** Command records kept per sandbox (the oldest go first); default {@link DEFAULT_COMMANDS_PER_SANDBOX}. */
  commandsPerSandbox?: number;
  /** Bytes of command records kept over all sandboxes; default {@link DEFAULT_COMMAND_BYTES}. */
  commandBytes?: number;
  /** How long a sandbox's rings outlive its last entry once it no longer runs, so the edge can still pull them. */
  keepAfterEndMs: number;
}

/** What the edge pulled: entries after its cursor, oldest first. */
export interface TelemetryPull {
  epoch: string;
  samples: TelemetrySample[];
  logs: TelemetryLog[];
  commands: TelemetryCommand[];
  nextAfter: number;
  more: boolean;
}

export const DEFAULT_COMMANDS_PER_SANDBOX = 256;
export const DEFAULT_COMMAND_BYTES = 64 * 1024 * 1024;
/** Bytes of command records in one pull at most (the edge reads the answer whole); always at least one record. */
export const PULL_COMMAND_BYTES = 8 * 1024 * 1024;

/** The most entries one pull returns, whatever the edge asks. */
export const PULL_MAX = 5000;
const PULL_DEFAULT = 2000;

interface Rings {
  samples: TelemetrySample[];
  logs: TelemetryLog[];
  commands: TelemetryCommand[];
  lastWriteMs: number;
}

/**
 * The agent's short memory of each sandbox's samples and log, until the edge pulls them into
 * Postgres. One sequence number runs across all sandboxes, so the edge keeps a single cursor per
 * host; `epoch` is new with every agent start, so a cursor from before a restart reads from the start
 * of what this agent holds. Each sandbox's rings are bounded, and dropped a while after it stopped.
 */
export class TelemetryStore {
  readonly epoch = randomBytes(8).toString("hex");
  readonly #rings = new Map<string, Rings>();
  #seq = 0;
  #commandBytes = 0;

  constructor(
    private readonly limits: TelemetryLimits,
    private readonly now: () => number = Date.now,
  ) {}

  addSample(sample: Omit<TelemetrySample, "seq">): void {
    const rings = this.#ringsOf(sample.sandboxId);
    rings.samples.push({ ...sample, seq: ++this.#seq });
    trim(rings.samples, this.limits.samplesPerSandbox);
  }

  addLog(entry: Omit<TelemetryLog, "seq">): void {
    const rings = this.#ringsOf(entry.sandboxId);
    rings.logs.push({ ...entry, seq: ++this.#seq });
    trim(rings.logs, this.limits.logsPerSandbox);
  }

  /**
   * Adds a finished command. Bounded per sandbox and over the store: past either budget the oldest
   * records go first (the edge pulls every sweep; what it missed is lost, never the agent's memory).
   */
  addCommand(command: Omit<TelemetryCommand, "seq">): void {
    const rings = this.#ringsOf(command.sandboxId);
    rings.commands.push({ ...command, seq: ++this.#seq });
    this.#commandBytes += commandBytes(command);
    const perSandbox = this.limits.commandsPerSandbox ?? DEFAULT_COMMANDS_PER_SANDBOX;
    while (rings.commands.length > perSandbox) this.#dropCommand(rings);
    const budget = this.limits.commandBytes ?? DEFAULT_COMMAND_BYTES;
    while (this.#commandBytes > budget) {
      let oldest: Rings | undefined;
      for (const r of this.#rings.values()) {
        const first = r.commands[0];
        if (first && (!oldest || first.seq < (oldest.commands[0]?.seq ?? Number.POSITIVE_INFINITY))) oldest = r;
      }
      if (!oldest) break;
      this.#dropCommand(oldest);
    }
  }

  /** Bytes of command records held now. */
  get commandBytes(): number {
    return this.#commandBytes;
  }

  #dropCommand(rings: Rings): void {
    const gone = rings.commands.shift();
    if (gone) this.#commandBytes -= commandBytes(gone);
  }

  /** Entries after `afterSeq` (of `epoch`; another epoch reads from the start), oldest first. */
  pull(request: { epoch: string; afterSeq: number; limit?: number; sandboxIds?: readonly string[] }): TelemetryPull {
    const after = request.epoch === this.epoch ? request.afterSeq : 0;
    const limit = Math.min(request.limit || PULL_DEFAULT, PULL_MAX);
    const ids = request.sandboxIds && request.sandboxIds.length > 0 ? request.sandboxIds : [...this.#rings.keys()];
    const samples: TelemetrySample[] = [];
    const logs: TelemetryLog[] = [];
    const commands: TelemetryCommand[] = [];
    for (const id of ids) {
      const rings = this.#rings.get(id);
      if (!rings) continue;
      samples.push(...entriesAfter(rings.samples, after));
      logs.push(...entriesAfter(rings.logs, after));
      commands.push(...entriesAfter(rings.commands, after));
    }
    // Merge by seq and cut at the limit (and at the command bytes), so the cursor moves past exactly what was returned.
    const sizes = new Map(commands.map((c) => [c.seq, commandBytes(c)]));
    const all = [...samples.map((s) => s.seq), ...logs.map((l) => l.seq), ...commands.map((c) => c.seq)].sort(
      (a, b) => a - b,
    );
    let count = 0;
    let bytes = 0;
    for (const seq of all) {
      const size = sizes.get(seq) ?? 0;
      if (count >= limit || (count > 0 && size > 0 && bytes + size > PULL_COMMAND_BYTES)) break;
      bytes += size;
      count++;
    }
    const more = all.length > count;
    const last = count > 0 ? (all[count - 1] ?? after) : after;
    const filtered = request.sandboxIds !== undefined && request.sandboxIds.length > 0;
    return {
      epoch: this.epoch,
      samples: samples.filter((s) => s.seq <= last).sort((a, b) => a.seq - b.seq),
      logs: logs.filter((l) => l.seq <= last).sort((a, b) => a.seq - b.seq),
      commands: commands.filter((c) => c.seq <= last).sort((a, b) => a.seq - b.seq),
      // A pull of some sandboxes leaves the others' entries for the next full pull.
      nextAfter: filtered ? after : last,
      more,
    };
  }

  /** Drops the rings of sandboxes that no longer run and wrote nothing for `keepAfterEndMs`. */
  prune(isLive: (sandboxId: string) => boolean): number {
    const cutoff = this.now() - this.limits.keepAfterEndMs;
    let dropped = 0;
    for (const [id, rings] of this.#rings) {
      if (rings.lastWriteMs < cutoff && !isLive(id)) {
        while (rings.commands.length > 0) this.#dropCommand(rings);
        this.#rings.delete(id);
        dropped++;
      }
    }
    return dropped;
  }

  /** Sandboxes with rings (for tests and the agent's own metrics). */
  get sandboxes(): number {
    return this.#rings.size;
  }

  #ringsOf(sandboxId: string): Rings {
    let rings = this.#rings.get(sandboxId);
    if (!rings) {
      rings = { samples: [], logs: [], commands: [], lastWriteMs: 0 };
      this.#rings.set(sandboxId, rings);
    }
    rings.lastWriteMs = this.now();
    return rings;
  }
}

function trim<T>(ring: T[], max: number): void {
  if (ring.length > max) ring.splice(0, ring.length - max);
}

/** The entries of a seq-ordered ring after `seq` (binary search: rings hold thousands). */
function entriesAfter<T extends { seq: number }>(ring: readonly T[], seq: number): T[] {
  let lo = 0;
  let hi = ring.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((ring[mid]?.seq ?? 0) <= seq) lo = mid + 1;
    else hi = mid;
  }
  return ring.slice(lo);
}
