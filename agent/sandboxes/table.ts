import { sandboxNotFound } from "../errors.js";
import type { Slot } from "../network/slots.js";
import type { Clock } from "./clock.js";
import type { GuestEnvd } from "./guest-envd.js";
import { assertSandboxId } from "./ids.js";
import type { SandboxRecord, StopReasonName } from "./record.js";

/** A sandbox the host holds: its record, its network slot and its envd client (while it has a slot). */
export interface LiveSandbox {
  record: SandboxRecord;
  slot: Slot | undefined;
  envd: GuestEnvd | undefined;
}

/** Statuses whose sandbox holds host resources (a process, a slot, memory). */
const HOLDS_RESOURCES = new Set(["starting", "running", "pausing", "resuming", "stopping"]);

/**
 * The agent's sandboxes in memory: those it holds (live) and the recently stopped ones, kept for
 * GetSandbox until the reaper expires them. Shared by the manager and its collaborators; the
 * manager's per-sandbox lock orders the changes.
 */
export class SandboxTable {
  readonly live = new Map<string, LiveSandbox>();
  readonly stopped = new Map<string, SandboxRecord>();
  readonly #clock: Clock;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  get(id: string): SandboxRecord {
    assertSandboxId(id);
    const live = this.live.get(id);
    if (live) return live.record;
    const stopped = this.stopped.get(id);
    if (stopped) return stopped;
    throw sandboxNotFound(id);
  }

  liveOrThrow(id: string): LiveSandbox {
    assertSandboxId(id);
    const live = this.live.get(id);
    if (!live) throw sandboxNotFound(id);
    return live;
  }

  records(): SandboxRecord[] {
    return [...this.live.values()].map((l) => l.record);
  }

  /** Moves a record to the stopped set (the caller has removed it from the live map or never put it there). */
  markStopped(record: SandboxRecord, reason: StopReasonName, error: string | undefined): void {
    record.status = "stopped";
    record.stopReason = reason;
    record.stoppedAt = this.#clock.now();
    record.error = error;
    record.endAt = undefined;
    record.handle = undefined;
    record.slot = undefined;
    this.stopped.set(record.id, record);
  }

  /** Forgets records stopped more than `retentionMs` before `now`. */
  expireStopped(retentionMs: number, now: number): void {
    for (const [id, record] of this.stopped) {
      if (record.stoppedAt !== undefined && now - record.stoppedAt > retentionMs) this.stopped.delete(id);
    }
  }

  /** What the sandboxes that hold host resources use (a paused sandbox with a slot is frozen in place). */
  usage(): { sandboxes: number; vcpus: number; memoryMb: number } {
    let sandboxes = 0;
    let vcpus = 0;
    let memoryMb = 0;
    for (const { record, slot } of this.live.values()) {
      if (!HOLDS_RESOURCES.has(record.status) && !(record.status === "paused" && slot !== undefined)) continue;
      sandboxes++;
      vcpus += record.vcpus;
      memoryMb += record.memoryMb;
    }
    return { sandboxes, vcpus, memoryMb };
  }

  countsByStatus(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const { record } of this.live.values()) counts[record.status] = (counts[record.status] ?? 0) + 1;
    counts.stopped = this.stopped.size;
    return counts;
  }

  /** The envd version the most recent guest reported (X-Envd-Version on /init), or "". */
  get envdVersion(): string {
    let version = "";
    for (const { record } of this.live.values()) if (record.envdVersion !== "") version = record.envdVersion;
    return version;
  }
}
