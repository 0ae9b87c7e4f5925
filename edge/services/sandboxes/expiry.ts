import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { and, eq, lte } from "drizzle-orm";
import { type Sandbox, SandboxState } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import { connectCodeOf } from "../../clients/agent.js";
import { hosts, type SandboxRow, sandboxes } from "../../db/schema/index.js";
import { stopReasonFromAgent } from "../agent-mapping.js";
import type { ServiceContext } from "../context.js";
import { agentFor } from "../hosts/target.js";
import { stopInsteadOfPause } from "../reconcile/pause-quota.js";
import { snapshotBytesOf, type Transition } from "../reconcile/plan.js";
import { admitPaused, effectiveQuotas, lockTeam, QuotaExceededError, sandboxUsage } from "../teams/quotas.js";
import { compareAndSet, reloadSandbox, type SandboxPatch } from "./transition.js";

/**
 * Read repair at the end time. The host runs a sandbox's timeout action itself, at its end time (a
 * timer per sandbox on the agent); the database would learn of it only at the next reconcile sweep.
 * So a read that finds a row still `running` past its `end_at` asks the host and records what it
 * reports (compare-and-set, as the sweep does) before answering: getInfo, list, connect and the
 * sandbox proxy then see `paused` or gone within the host's action time, not a sweep later. The
 * agent never needs to reach the edge.
 */

/** How long a read waits for a host that is in the middle of the action (pausing, stopping). */
export const expirySettleMs = 5_000;
/**
 * How long a read waits for a host that still runs the sandbox past its end time: its timer fires at
 * that time, so only clock skew between edge and host (or an agent without the timer) makes this
 * wait, and it must not hold every read of such a row for long.
 */
export const expiryGraceMs = 1_000;
const pollMs = 50;
/** Deadline of one GetSandbox. */
const askTimeoutMs = 2_000;
/** Expired rows a list repairs before it reads (the rest are left to the sweep). */
const listRepairLimit = 32;
const listRepairConcurrency = 4;

/** Whether the row says running although its end time has passed. */
export function isPastEnd(row: SandboxRow, now: Date): boolean {
  return row.state === "running" && row.endAt !== null && row.endAt.getTime() <= now.getTime() && row.hostId !== null;
}

/** The columns that record what the host reports; undefined while the host is still acting. */
function patchFromHost(row: SandboxRow, reported: Sandbox | null, now: Date): SandboxPatch | undefined {
  if (reported === null) {
    // The host has forgotten it (stopped records are kept for a while, so this is rare).
    return { state: "stopped", stopReason: row.onTimeout === "kill" ? "timeout" : "lost", endAt: null, stoppedAt: now };
  }
  switch (reported.state) {
    case SandboxState.PAUSED:
      return {
        state: "paused",
        endAt: null,
        snapshotBytes: snapshotBytesOf(reported),
        pausedWithoutMemory: reported.pausedWithoutMemory,
      };
    case SandboxState.STOPPED:
      return { state: "stopped", stopReason: stopReasonFromAgent(reported.stopReason), endAt: null, stoppedAt: now };
    case SandboxState.STOPPING:
      // Past its end time a sandbox being torn down is its timeout's kill (the host marks it stopped
      // even if the teardown fails): it is gone for the caller now, not when its files are removed.
      return { state: "stopped", stopReason: "timeout", endAt: null, stoppedAt: now };
    case SandboxState.ERROR:
      return { state: "error", error: reported.error || "the host reports an error", endAt: null, stoppedAt: now };
    case SandboxState.RUNNING: {
      // Running with a later end time: someone extended it; the row follows.
      const endAt = reported.endAt ? timestampDate(reported.endAt) : null;
      if (endAt === null || endAt.getTime() > now.getTime()) return { endAt };
      return undefined;
    }
    default:
      return undefined;
  }
}

/**
 * Returns the row as it should be: unchanged unless it is `running` past its end time, in which case
 * the host is asked (waiting up to `expirySettleMs` while it pauses or stops the sandbox) and the
 * row is updated to match. A host that does not answer leaves the row as it is (the sweep decides).
 */
export async function repairExpired(ctx: ServiceContext, row: SandboxRow): Promise<SandboxRow> {
  if (!isPastEnd(row, ctx.now()) || row.hostId === null) return row;
  const [host] = await ctx.db.select().from(hosts).where(eq(hosts.id, row.hostId)).limit(1);
  if (!host) return row;
  const agent = await agentFor(ctx, host);
  const started = Date.now();
  let patch: SandboxPatch | undefined;
  for (;;) {
    let reported: Sandbox | null;
    try {
      reported = (await agent.getSandbox({ sandboxId: row.id }, { timeoutMs: askTimeoutMs })).sandbox ?? null;
    } catch (err) {
      if (connectCodeOf(err) !== Code.NotFound) {
        ctx.logger.warn("read repair: the host did not answer about an expired sandbox", { sandboxId: row.id, err });
        return row;
      }
      reported = null;
    }
    patch = patchFromHost(row, reported, ctx.now());
    if (patch !== undefined) break;
    const acting = reported?.state === SandboxState.PAUSING;
    if (Date.now() - started > (acting ? expirySettleMs : expiryGraceMs)) return row;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  const event = {
    type: patch.state ?? "timeout_synced",
    actor: "reconcile" as const,
    detail: { cause: "read repair: the host acted at the end time" },
  };
  let updated: SandboxRow | null;
  try {
    // A pause at the timeout is held to the team's paused quotas, as the sweep holds it (pause-quota.ts).
    updated = await compareAndSet(
      ctx.db,
      row,
      patch,
      event,
      ctx.now(),
      patch.state === "paused"
        ? async (tx) => {
            const team = await lockTeam(tx, row.teamId);
            admitPaused(effectiveQuotas(team.quotas), await sandboxUsage(tx, row.teamId));
          }
        : undefined,
    );
  } catch (err) {
    if (!(err instanceof QuotaExceededError)) throw err;
    const stop = stopInsteadOfPause(
      { ...transitionOf(row), toState: "paused", snapshotBytes: patch.snapshotBytes ?? 0 },
      err,
    );
    updated = await compareAndSet(
      ctx.db,
      row,
      { state: "stopped", stopReason: "timeout", endAt: null, stoppedAt: ctx.now(), error: stop.error },
      { type: "stopped", actor: "reconcile", detail: { cause: stop.cause } },
      ctx.now(),
    );
    if (updated) {
      await agent
        .destroySandbox({ sandboxId: row.id }, { timeoutMs: askTimeoutMs })
        .catch((e) =>
          ctx.logger.warn("read repair: destroy after a refused pause failed", { sandboxId: row.id, err: e }),
        );
    }
  }
  // Lost the compare-and-set: someone else changed it meanwhile, and theirs is newer.
  return updated ?? (await reloadSandbox(ctx.db, row.id)) ?? row;
}

/** The sweep's shape of a change to `row`, for the quota refusal's wording. */
function transitionOf(row: SandboxRow): Transition {
  return {
    id: row.id,
    version: row.version,
    rule: "synced",
    fromState: row.state,
    toState: row.state,
    stopReason: null,
    endAt: null,
    keepEndAt: false,
    error: null,
    hostAction: "nothing",
    cause: "read repair",
  };
}

/** Repairs a team's rows that are `running` past their end time (before a list reads them). */
export async function repairExpiredOfTeam(ctx: ServiceContext, teamId: string): Promise<void> {
  const expired = await ctx.db
    .select()
    .from(sandboxes)
    .where(and(eq(sandboxes.teamId, teamId), eq(sandboxes.state, "running"), lte(sandboxes.endAt, ctx.now())))
    .limit(listRepairLimit);
  let next = 0;
  const worker = async () => {
    for (let row = expired[next++]; row !== undefined; row = expired[next++]) await repairExpired(ctx, row);
  };
  await Promise.all(Array.from({ length: Math.min(listRepairConcurrency, expired.length) }, worker));
}
