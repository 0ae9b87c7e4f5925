import { timestampDate } from "@bufbuild/protobuf/wkt";
import { TEMPLATE_BUILD_METADATA } from "../../../lib/template-builds.js";
import { type Reap, type Sandbox, SandboxState } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import type { SandboxRow, SandboxStateName, StopReasonName } from "../../db/schema/index.js";
import { stateFromAgent, stopReasonFromAgent } from "../agent-mapping.js";
import type { ReconcileOptions } from "./options.js";

/**
 * The convergence rules, as counted in a sweep's summary:
 * - `stopped`: running/paused/missing in the database but gone from the host → `stopped` with the host's reason;
 * - `synced`: the host changed a sandbox on its own (its TTL reaper paused it, a pause failed) → the row follows;
 * - `restored`: `missing` and its host answers again with the sandbox → the host's state;
 * - `expired`: past `end_at` in the database but still running → paused or stopped per its timeout action;
 * - `stuck`: `pending`/`starting` too long → `error` (destroyed on the host); `pausing`/`resuming` too long → the host's state;
 * - `orphaned`: on the host but unknown or stopped in the database, past the grace period → destroyed on the host;
 * - `missing`: its host failed enough sweeps in a row → `missing`.
 */
export const reconcileRules = ["stopped", "synced", "restored", "expired", "stuck", "orphaned", "missing"] as const;
export type ReconcileRule = (typeof reconcileRules)[number];

/** The columns of a sandbox row the sweep reads. */
export type ObservedRow = Pick<
  SandboxRow,
  "id" | "hostId" | "state" | "version" | "onTimeout" | "endAt" | "updatedAt" | "stoppedAt"
> &
  Partial<Pick<SandboxRow, "keepMemory">>;

/** One compare-and-set the sweep wants: applied only if the row still has `version`. */
export interface Transition {
  id: string;
  version: number;
  rule: ReconcileRule;
  fromState: SandboxStateName;
  toState: SandboxStateName;
  stopReason: StopReasonName | null;
  /** The new `end_at`, unless `keepEndAt`. */
  endAt: Date | null;
  keepEndAt: boolean;
  error: string | null;
  /** What the sweep does on the host once the row changed. */
  hostAction: "nothing" | "destroy" | "pause";
  /**
   * Bytes of the pause snapshot the host reported, for a row turning `paused` (the paused-disk
   * quota sums them); left out, the row keeps what it had.
   */
  snapshotBytes?: number;
  /** For a row turning `paused`: whether only its files were kept; left out, the row keeps what it had. */
  pausedWithoutMemory?: boolean;
  /** For `hostAction: "pause"` at the timeout: whether the pause keeps memory (the row's policy). */
  keepMemory?: boolean;
  /** Why, for the sandbox event. */
  cause: string;
}

/** A sandbox to destroy on the host without touching the database. */
export interface OrphanDestroy {
  id: string;
  cause: string;
}

/** What one host's sweep will do. */
export interface HostPlan {
  transitions: Transition[];
  orphans: OrphanDestroy[];
}

/** What a host reported in ListSandboxes. */
export interface HostReport {
  sandboxes: readonly Sandbox[];
  /** The reaper's unacknowledged acts, oldest first. */
  reaps: readonly Reap[];
}

const settled: ReadonlySet<SandboxStateName> = new Set(["running", "paused", "missing"]);
const stoppedInDb: ReadonlySet<SandboxStateName> = new Set(["stopped", "error"]);

/** Bytes of the pause snapshot files the host reports for a sandbox (0 when it pauses in place). */
export function snapshotBytesOf(sandbox: Sandbox | undefined): number {
  return (sandbox?.snapshotFiles ?? []).reduce((sum, f) => sum + Number(f.sizeBytes), 0);
}

function reportedEndAt(sandbox: Sandbox): Date | null {
  return sandbox.endAt ? timestampDate(sandbox.endAt) : null;
}

/** The reason a sandbox left its host: the reaper's, when it reported one, else `lost`. */
function goneReason(reaped: Sandbox | undefined): { reason: StopReasonName; cause: string } {
  if (reaped && reaped.state === SandboxState.STOPPED) {
    const reason = stopReasonFromAgent(reaped.stopReason);
    return { reason, cause: `host reported it stopped (${reason})` };
  }
  return { reason: "lost", cause: "no longer on its host" };
}

function transition(
  row: ObservedRow,
  rule: ReconcileRule,
  toState: SandboxStateName,
  fields: Partial<
    Pick<
      Transition,
      | "stopReason"
      | "endAt"
      | "keepEndAt"
      | "error"
      | "hostAction"
      | "snapshotBytes"
      | "pausedWithoutMemory"
      | "keepMemory"
    >
  > & {
    cause: string;
  },
): Transition {
  return {
    ...(fields.snapshotBytes !== undefined ? { snapshotBytes: fields.snapshotBytes } : {}),
    ...(fields.pausedWithoutMemory !== undefined ? { pausedWithoutMemory: fields.pausedWithoutMemory } : {}),
    ...(fields.keepMemory !== undefined ? { keepMemory: fields.keepMemory } : {}),
    id: row.id,
    version: row.version,
    rule,
    fromState: row.state,
    toState,
    stopReason: fields.stopReason ?? null,
    endAt: fields.endAt ?? null,
    keepEndAt: fields.keepEndAt ?? false,
    error: fields.error ?? null,
    hostAction: fields.hostAction ?? "nothing",
    cause: fields.cause,
  };
}

/** Moves a row to what the host reports for it (or `stopped` when the host no longer has it). */
function followHost(
  row: ObservedRow,
  rule: ReconcileRule,
  live: Sandbox | undefined,
  reaped: Sandbox | undefined,
): Transition | undefined {
  if (!live) {
    const { reason, cause } = goneReason(reaped);
    return transition(row, rule === "restored" ? "stopped" : rule, "stopped", { stopReason: reason, cause });
  }
  const hostState = stateFromAgent(live.state);
  if (hostState === row.state) return undefined;
  switch (hostState) {
    case "running":
      return transition(row, rule, "running", {
        endAt: reportedEndAt(live),
        pausedWithoutMemory: false,
        cause: "host reports it running",
      });
    case "paused":
      return transition(row, rule, "paused", {
        endAt: null,
        snapshotBytes: snapshotBytesOf(live),
        pausedWithoutMemory: live.pausedWithoutMemory,
        cause: "host reports it paused",
      });
    case "error":
      return transition(row, rule, "error", { error: live.error || "the host reports an error", cause: "host error" });
    default:
      // The host is mid-transition (starting, pausing, resuming); look again next sweep.
      return undefined;
  }
}

/**
 * Decides, for one host, which rows change and which host sandboxes to destroy. Pure: the caller
 * read `rows` (this host's active rows, plus the rows of every id the host reported) before
 * calling ListSandboxes, so any API change made after the read makes the compare-and-set fail.
 */
export function planHost(
  hostId: string,
  rows: readonly ObservedRow[],
  report: HostReport,
  now: Date,
  options: Pick<ReconcileOptions, "orphanGraceMs" | "stuckAfterMs">,
): HostPlan {
  const live = new Map(report.sandboxes.map((s) => [s.sandboxId, s]));
  // Oldest first, so a sandbox reaped twice (auto-paused, resumed, then killed) maps to its last reap.
  const reaped = new Map<string, Sandbox>();
  for (const reap of report.reaps) if (reap.sandbox) reaped.set(reap.sandbox.sandboxId, reap.sandbox);
  const byId = new Map(rows.map((r) => [r.id, r]));
  const transitions: Transition[] = [];
  const orphans: OrphanDestroy[] = [];
  const age = (since: Date) => now.getTime() - since.getTime();

  for (const row of rows) {
    if (row.hostId !== hostId) continue;
    const onHost = live.get(row.id);
    const reapedOne = reaped.get(row.id);
    let change: Transition | undefined;
    switch (row.state) {
      case "pending":
      case "starting":
        if (age(row.updatedAt) > options.stuckAfterMs) {
          change = transition(row, "stuck", "error", {
            error: `stuck in ${row.state} for more than ${Math.round(options.stuckAfterMs / 1000)} s`,
            hostAction: onHost ? "destroy" : "nothing",
            cause: `stuck in ${row.state}`,
          });
        }
        break;
      case "pausing":
      case "resuming":
        // The API is in the middle of a call; only a stale transition (the caller died) is settled.
        if (age(row.updatedAt) > options.stuckAfterMs) change = followHost(row, "stuck", onHost, reapedOne);
        break;
      case "missing":
        change = followHost(row, "restored", onHost, reapedOne);
        break;
      case "running":
        if (onHost?.state === SandboxState.RUNNING && row.endAt && row.endAt.getTime() <= now.getTime()) {
          change =
            row.onTimeout === "pause"
              ? transition(row, "expired", "pausing", {
                  keepEndAt: true,
                  hostAction: "pause",
                  keepMemory: row.keepMemory ?? true,
                  cause: "timeout (pause)",
                })
              : transition(row, "expired", "stopped", {
                  stopReason: "timeout",
                  hostAction: "destroy",
                  cause: "timeout",
                });
        } else {
          change = followHost(row, onHost ? "synced" : "stopped", onHost, reapedOne);
        }
        break;
      case "paused":
        change = followHost(row, onHost ? "synced" : "stopped", onHost, reapedOne);
        break;
      default:
        break;
    }
    if (change) transitions.push(change);
  }

  for (const sandbox of report.sandboxes) {
    const row = byId.get(sandbox.sandboxId);
    if (row && row.hostId === hostId && !stoppedInDb.has(row.state)) continue;
    if (row && row.hostId === hostId && stoppedInDb.has(row.state)) {
      const since = row.stoppedAt ?? row.updatedAt;
      if (age(since) > options.orphanGraceMs) {
        orphans.push({ id: sandbox.sandboxId, cause: `${row.state} in the database` });
      }
      continue;
    }
    if (row && row.hostId !== hostId && !stoppedInDb.has(row.state) && !settled.has(row.state)) {
      // Being created or moved elsewhere right now; not ours to judge.
      continue;
    }
    // A template build's sandbox has no row: the agent runs it for the build and ends it itself.
    if (!row && sandbox.metadata[TEMPLATE_BUILD_METADATA] !== undefined) continue;
    const created = sandbox.createdAt ? timestampDate(sandbox.createdAt) : new Date(0);
    if (age(created) > options.orphanGraceMs) {
      orphans.push({ id: sandbox.sandboxId, cause: row ? "placed on another host" : "unknown to the database" });
    }
  }
  return { transitions, orphans };
}

/** Row states the API is changing right now: a reap for such a row is still needed when it settles. */
const inFlight: ReadonlySet<SandboxStateName> = new Set(["pending", "starting", "pausing", "resuming"]);

/**
 * The reaps the host may drop once the plan's row changes have committed: every reap except those
 * the next sweep still needs — a reap whose row change was planned but lost its compare-and-set
 * (the next sweep plans it again), and a reap whose row the API is changing right now (its outcome
 * may yet need the reaper's reason).
 */
export function reapsToAcknowledge(
  hostId: string,
  rows: readonly ObservedRow[],
  report: HostReport,
  plan: HostPlan,
  applied: ReadonlySet<string>,
): string[] {
  const planned = new Set(plan.transitions.map((t) => t.id));
  const byId = new Map(rows.filter((r) => r.hostId === hostId).map((r) => [r.id, r]));
  return report.reaps
    .filter((reap) => {
      const id = reap.sandbox?.sandboxId ?? "";
      if (planned.has(id)) return applied.has(id);
      const row = byId.get(id);
      return !(row && inFlight.has(row.state));
    })
    .map((reap) => reap.reapId);
}
