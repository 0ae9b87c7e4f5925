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

export interface TelemetryLimits {
  /** Samples kept per sandbox (the oldest go first). */
  samplesPerSandbox: number;
  /** Log entries kept per sandbox. */
  logsPerSandbox: number;
  /** How long a sandbox's rings outlive its last entry once it no longer runs, so the edge can still pull them. */
  keepAfterEndMs: number;
}

/** What the edge pulled: entries after its cursor, oldest first. */
export interface TelemetryPull {
  epoch: string;
  samples: TelemetrySample[];
  logs: TelemetryLog[];
  nextAfter: number;
  more: boolean;
}

/** The most entries one pull returns, whatever the edge asks. */
export const PULL_MAX = 5000;
const PULL_DEFAULT = 2000;

interface Rings {
  samples: TelemetrySample[];
  logs: TelemetryLog[];
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

  /** Entries after `afterSeq` (of `epoch`; another epoch reads from the start), oldest first. */
  pull(request: { epoch: string; afterSeq: number; limit?: number; sandboxIds?: readonly string[] }): TelemetryPull {
    const after = request.epoch === this.epoch ? request.afterSeq : 0;
    const limit = Math.min(request.limit || PULL_DEFAULT, PULL_MAX);
    const ids = request.sandboxIds && request.sandboxIds.length > 0 ? request.sandboxIds : [...this.#rings.keys()];
    const samples: TelemetrySample[] = [];
    const logs: TelemetryLog[] = [];
    for (const id of ids) {
      const rings = this.#rings.get(id);
      if (!rings) continue;
      samples.push(...entriesAfter(rings.samples, after));
      logs.push(...entriesAfter(rings.logs, after));
    }
    // Merge by seq and cut at the limit, so the cursor moves past exactly what was returned.
    const all = [...samples.map((s) => s.seq), ...logs.map((l) => l.seq)].sort((a, b) => a - b);
    const more = all.length > limit;
    const last = more ? (all[limit - 1] ?? after) : (all.at(-1) ?? after);
    const filtered = request.sandboxIds !== undefined && request.sandboxIds.length > 0;
    return {
      epoch: this.epoch,
      samples: samples.filter((s) => s.seq <= last).sort((a, b) => a.seq - b.seq),
      logs: logs.filter((l) => l.seq <= last).sort((a, b) => a.seq - b.seq),
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
      rings = { samples: [], logs: [], lastWriteMs: 0 };
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
