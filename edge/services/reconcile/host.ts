import { Code, ConnectError } from "@connectrpc/connect";
import { and, eq, inArray, sql } from "drizzle-orm";
import { type GetHostInfoResponse, SandboxState } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import type { AgentClient } from "../../clients/agent.js";
import { activeSandboxStates, type HostRow, hosts, sandboxes } from "../../db/schema/index.js";
import type { ServiceContext } from "../context.js";
import { recordEvent } from "../events/record.js";
import { hostInfoColumns } from "../hosts/refresh.js";
import { hostTarget } from "../hosts/target.js";
import { collectDuringSweep } from "../telemetry/collect.js";
import { applyTransitions } from "./apply.js";
import { mapWithLimit } from "./limit.js";
import type { ReconcileOptions } from "./options.js";
import { applyTransitionsWithPauseQuota } from "./pause-quota.js";
import {
  type ObservedRow,
  planHost,
  type ReconcileRule,
  reapsToAcknowledge,
  reconcileRules,
  snapshotBytesOf,
  type Transition,
} from "./plan.js";
import { reconcileHostSnapshots } from "./snapshots.js";

/** What happened to one host in a sweep. */
export interface HostOutcome {
  hostId: string;
  /** Whether ListSandboxes answered. */
  answered: boolean;
  /** Rows changed, by rule. */
  changed: Record<ReconcileRule, number>;
  /** Sandboxes the sweep destroyed on the host (orphans, expired, stuck). */
  destroyedOnHost: number;
  /** Pauses or destroys the host refused or did not answer; retried next sweep. */
  actionFailures: number;
  /** The host turned `unhealthy` in this sweep. */
  becameUnhealthy: boolean;
  /** The host was `unhealthy` and answered again. */
  recovered: boolean;
  /** Why the host failed, when it did. */
  error?: string;
}

/** Zero counts for every rule. */
export function emptyCounts(): Record<ReconcileRule, number> {
  return Object.fromEntries(reconcileRules.map((r) => [r, 0])) as Record<ReconcileRule, number>;
}

/** A host's outcome before anything happened to it (and what a host whose sweep failed reports). */
export function emptyOutcome(hostId: string): HostOutcome {
  return {
    hostId,
    answered: false,
    changed: emptyCounts(),
    destroyedOnHost: 0,
    actionFailures: 0,
    becameUnhealthy: false,
    recovered: false,
  };
}

const observedColumns = {
  id: sandboxes.id,
  hostId: sandboxes.hostId,
  state: sandboxes.state,
  version: sandboxes.version,
  onTimeout: sandboxes.onTimeout,
  keepMemory: sandboxes.keepMemory,
  endAt: sandboxes.endAt,
  updatedAt: sandboxes.updatedAt,
  stoppedAt: sandboxes.stoppedAt,
};

/** States that turn `missing` when their host stops answering (creates in flight are left to the `stuck` rule). */
const goMissingFrom: ReadonlySet<string> = new Set(["running", "paused", "pausing", "resuming"]);

function describe(err: unknown): string {
  if (err instanceof ConnectError) return `${Code[err.code] ?? err.code}: ${err.rawMessage}`;
  return err instanceof Error ? err.message : String(err);
}

/**
 * Sweeps one host: reads its rows, asks it for its sandboxes, converges the two, and records its
 * health. The database work is a fixed number of statements whatever the number of sandboxes:
 * one or two selects, at most two batched compare-and-sets, and one host update.
 */
export async function reconcileHost(
  ctx: ServiceContext,
  host: HostRow,
  options: ReconcileOptions,
  /** `performance.now()` after which no new agent call starts (the sweep must end inside its lease). */
  deadline = Number.POSITIVE_INFINITY,
): Promise<HostOutcome> {
  const log = ctx.logger.child({ hostId: host.id });
  const outcome = emptyOutcome(host.id);

  // Read before asking the host: anything the API changes after this read bumps the version, so
  // the compare-and-sets below cannot overwrite it, and nothing the host reports predates the read.
  const rows: ObservedRow[] = await ctx.db
    .select(observedColumns)
    .from(sandboxes)
    .where(and(eq(sandboxes.hostId, host.id), inArray(sandboxes.state, [...activeSandboxStates])));

  let agent: AgentClient;
  let listed: Awaited<ReturnType<AgentClient["listSandboxes"]>>;
  let info: GetHostInfoResponse | undefined;
  try {
    agent = ctx.agents.client(await hostTarget(ctx, host), ctx.requestId);
    const [list, hostInfo] = await Promise.allSettled([
      agent.listSandboxes({}, { timeoutMs: options.hostTimeoutMs }),
      agent.getHostInfo({}, { timeoutMs: options.hostTimeoutMs }),
    ]);
    if (list.status === "rejected") throw list.reason;
    listed = list.value;
    if (hostInfo.status === "fulfilled") info = hostInfo.value;
  } catch (err) {
    outcome.error = describe(err);
    await recordFailure(ctx, host, rows, options, outcome);
    log.warn("host did not answer the sweep", { error: outcome.error, failures: host.consecutiveFailures + 1 });
    return outcome;
  }
  outcome.answered = true;

  const known = new Set(rows.map((r) => r.id));
  const unknownIds = listed.sandboxes.map((s) => s.sandboxId).filter((id) => !known.has(id));
  const others: ObservedRow[] =
    unknownIds.length === 0
      ? []
      : await ctx.db
          .select(observedColumns)
          .from(sandboxes)
          .where(sql`${sandboxes.id} in (select jsonb_array_elements_text(${JSON.stringify(unknownIds)}::jsonb))`);

  const planned = planHost(host.id, [...rows, ...others], listed, ctx.now(), options);
  // Timeout pauses pass the team's paused quotas in the transaction that writes them; a refused one
  // is a stop instead (pause-quota.ts), so `plan` from here on is what was decided.
  const { transitions: decided, applied } = await applyTransitionsWithPauseQuota(
    ctx.db,
    planned.transitions,
    ctx.now(),
  );
  const plan = { ...planned, transitions: decided };
  const appliedVersion = new Map(applied.map((a) => [a.id, a.version]));
  // Only now, with the rows written, may the host forget its reaps: a sweep that died before this
  // point leaves them to the next one, which still records `timeout` rather than `lost`.
  const acknowledge = reapsToAcknowledge(host.id, [...rows, ...others], listed, plan, new Set(appliedVersion.keys()));
  // Past the deadline the host simply reports them again to the next sweep.
  if (acknowledge.length > 0 && performance.now() <= deadline) await acknowledgeReaps(agent, acknowledge, options, log);
  const done = plan.transitions.filter((t) => appliedVersion.has(t.id));
  for (const t of done) outcome.changed[t.rule]++;
  if (plan.transitions.length > done.length) {
    log.debug("rows changed by the API during the sweep were left alone", {
      skipped: plan.transitions.length - done.length,
    });
  }

  // Host-side work, after the rows say what should be: a destroy that fails here is retried by the
  // orphan rule, because the row already says stopped.
  type Action = { kind: "destroy"; id: string; orphan: boolean } | { kind: "pause"; transition: Transition };
  const actions: Action[] = [
    ...done
      .filter((t) => t.hostAction === "destroy")
      .map((t): Action => ({ kind: "destroy", id: t.id, orphan: false })),
    ...done.filter((t) => t.hostAction === "pause").map((t): Action => ({ kind: "pause", transition: t })),
    ...plan.orphans.map((o): Action => ({ kind: "destroy", id: o.id, orphan: true })),
  ];
  const settle: Transition[] = [];
  await mapWithLimit(actions, options.actionConcurrency, async (action) => {
    if (performance.now() > deadline) {
      // Out of time: leave it to the next sweep. A destroy is retried by the orphan rule (the row
      // already says stopped); a pause is undone so the expired rule fires again.
      outcome.actionFailures++;
      if (action.kind === "pause") {
        const t = action.transition;
        const version = appliedVersion.get(t.id) ?? t.version;
        settle.push({ ...t, version, fromState: "pausing", toState: "running", keepEndAt: true, cause: "deferred" });
      }
      return;
    }
    if (action.kind === "destroy") {
      try {
        await agent.destroySandbox({ sandboxId: action.id }, { timeoutMs: options.actionTimeoutMs });
        outcome.destroyedOnHost++;
        if (action.orphan) outcome.changed.orphaned++;
      } catch (err) {
        if (ConnectError.from(err).code === Code.NotFound) return;
        outcome.actionFailures++;
        log.warn("destroy during sweep failed", { sandboxId: action.id, error: describe(err) });
      }
      return;
    }
    const t = action.transition;
    const version = appliedVersion.get(t.id) ?? t.version;
    try {
      const paused = await agent.pauseSandbox(
        { sandboxId: t.id, keepMemory: t.keepMemory },
        { timeoutMs: options.actionTimeoutMs },
      );
      settle.push({
        ...t,
        version,
        fromState: "pausing",
        toState: "paused",
        endAt: null,
        keepEndAt: false,
        snapshotBytes: snapshotBytesOf(paused.sandbox),
        pausedWithoutMemory: paused.sandbox?.pausedWithoutMemory ?? false,
      });
    } catch (err) {
      // The host's own timer paused it between the sweep's read and this call: that is the outcome wanted.
      const onHost = await agent
        .getSandbox({ sandboxId: t.id }, { timeoutMs: options.hostTimeoutMs })
        .then((res) => res.sandbox)
        .catch(() => undefined);
      if (onHost?.state === SandboxState.PAUSED) {
        settle.push({
          ...t,
          version,
          fromState: "pausing",
          toState: "paused",
          endAt: null,
          keepEndAt: false,
          snapshotBytes: snapshotBytesOf(onHost),
          pausedWithoutMemory: onHost.pausedWithoutMemory,
          cause: "paused by the host at its end time",
        });
        return;
      }
      outcome.actionFailures++;
      log.warn("pause on timeout failed", { sandboxId: t.id, error: describe(err) });
      settle.push({ ...t, version, fromState: "pausing", toState: "running", keepEndAt: true, cause: "pause failed" });
    }
  });
  await applyTransitions(ctx.db, settle, ctx.now());
  await collectDuringSweep(ctx, agent, host.id, { timeoutMs: options.hostTimeoutMs, deadline });
  if (performance.now() <= deadline) await reconcileHostSnapshots(ctx, agent, host.id, options);

  const now = ctx.now();
  await ctx.db.transaction(async (tx) => {
    const [before] = await tx.select({ status: hosts.status }).from(hosts).where(eq(hosts.id, host.id)).for("update");
    await tx
      .update(hosts)
      .set({
        ...(info ? hostInfoColumns(info) : {}),
        consecutiveFailures: 0,
        lastSeenAt: now,
        lastError: null,
        status: sql`case when ${hosts.status} = 'unhealthy' then 'active' else ${hosts.status} end`,
        updatedAt: now,
      })
      .where(eq(hosts.id, host.id));
    if (before?.status === "unhealthy") {
      await recordEvent(tx, {
        teamId: null,
        type: "host.up",
        hostId: host.id,
        actor: "reconcile",
        data: { fromStatus: "unhealthy", toStatus: "active" },
        at: now,
      });
    }
  });
  if (host.status === "unhealthy") {
    outcome.recovered = true;
    log.info("host answers again", { restored: outcome.changed.restored });
  }
  return outcome;
}

/**
 * Tells the host which reaps are recorded. A failure is only logged: the host reports them again
 * and the next sweep, finding the rows already changed, acknowledges them then.
 */
async function acknowledgeReaps(
  agent: AgentClient,
  reapIds: string[],
  options: ReconcileOptions,
  log: ServiceContext["logger"],
): Promise<void> {
  try {
    await agent.acknowledgeReaped({ reapIds }, { timeoutMs: options.hostTimeoutMs });
  } catch (err) {
    log.warn("acknowledging reaps failed; the host reports them again", {
      reaps: reapIds.length,
      error: describe(err),
    });
  }
}

/**
 * Counts a failed sweep against the host. At the threshold an `active` host turns `unhealthy` (the
 * scheduler skips it) and its settled sandboxes turn `missing`; a draining host keeps its status
 * (it takes no new sandboxes either way) but its sandboxes go missing all the same.
 */
async function recordFailure(
  ctx: ServiceContext,
  host: HostRow,
  rows: readonly ObservedRow[],
  options: ReconcileOptions,
  outcome: HostOutcome,
): Promise<void> {
  const threshold = options.unhealthyAfterFailures;
  const updated = await ctx.db.transaction(async (tx) => {
    const [before] = await tx.select({ status: hosts.status }).from(hosts).where(eq(hosts.id, host.id)).for("update");
    const [after] = await tx
      .update(hosts)
      .set({
        consecutiveFailures: sql`${hosts.consecutiveFailures} + 1`,
        lastError: outcome.error ?? "unreachable",
        status: sql`case when ${hosts.consecutiveFailures} + 1 >= ${threshold} and ${hosts.status} = 'active' then 'unhealthy' else ${hosts.status} end`,
        updatedAt: ctx.now(),
      })
      .where(eq(hosts.id, host.id))
      .returning({ failures: hosts.consecutiveFailures, status: hosts.status });
    if (before && before.status !== "unhealthy" && after?.status === "unhealthy") {
      await recordEvent(tx, {
        teamId: null,
        type: "host.down",
        hostId: host.id,
        actor: "reconcile",
        data: { consecutiveFailures: after.failures, error: outcome.error ?? "unreachable" },
      });
    }
    return after;
  });
  if (!updated || updated.failures < threshold) return;
  outcome.becameUnhealthy = host.status !== "unhealthy" && updated.status === "unhealthy";
  const missing: Transition[] = rows
    .filter((r) => goMissingFrom.has(r.state))
    .map((r) => ({
      id: r.id,
      version: r.version,
      rule: "missing",
      fromState: r.state,
      toState: "missing",
      stopReason: null,
      endAt: null,
      keepEndAt: true,
      error: null,
      hostAction: "nothing",
      cause: `host failed ${updated.failures} sweeps in a row`,
    }));
  const applied = await applyTransitions(ctx.db, missing, ctx.now());
  outcome.changed.missing += applied.length;
}
