import { agentErrorToServiceError, agentTimeouts, isAgentAnswer } from "../../clients/agent.js";
import type { SandboxNetwork } from "../../contracts/network.js";
import {
  type IsolationClassName,
  type SandboxRow,
  sandboxEvents,
  sandboxes,
  type TimeoutActionName,
} from "../../db/schema/index.js";
import { dateOrNull, stateFromAgent, timeoutActionToAgent } from "../agent-mapping.js";
import { recordAudit } from "../audit/record.js";
import type { TeamContext } from "../context.js";
import { BadRequestError } from "../errors.js";
import { recordSandboxChange } from "../events/record.js";
import { agentFor } from "../hosts/target.js";
import { newEnvdAccessToken, newSandboxId } from "../ids.js";
import { strongerIsolation } from "../scheduler/isolation.js";
import { pickHost } from "../scheduler/pick-host.js";
import { loadReadySnapshot } from "../snapshots/load.js";
import {
  admitRunning,
  checkTimeoutQuota,
  effectiveQuotas,
  loadTeamPolicy,
  lockTeam,
  sandboxUsage,
} from "../teams/quotas.js";
import { resolveTemplateForSandbox } from "../templates/resolve.js";
import { checkNetworkPolicy, policyToAgent } from "./network.js";
import { compareAndSet, reloadSandbox } from "./transition.js";
import { type SandboxView, toSandboxView } from "./view.js";

/** Input of `createSandbox`, defaults already applied by the route schema. */
export interface CreateSandboxInput {
  template: string;
  vcpus: number;
  memoryMb: number;
  timeoutSec: number;
  onTimeout: TimeoutActionName;
  envVars: Record<string, string>;
  metadata: Record<string, string>;
  internetAccess?: boolean;
  /** Egress policy; validated here (INVALID_NETWORK_POLICY). Empty lists are stored as given. */
  network?: SandboxNetwork;
  /** Whether proxy traffic resumes the sandbox while paused (default false). */
  autoResume?: boolean;
  /**
   * Whether a pause at the timeout keeps memory (default true). False (files only) needs
   * `onTimeout: "pause"` and cannot be combined with `autoResume` (resuming reboots the sandbox, so
   * traffic must not do it), as on E2B.
   */
  keepMemory?: boolean;
  /**
   * The weakest isolation class the sandbox may run on. The team's minimum applies as well, and the
   * stronger of the two wins: asking for less than the team's minimum gets the team's minimum.
   */
  isolation?: IsolationClassName;
  /**
   * Start from this snapshot of the team (edge/services/snapshots) instead of the bare template: the
   * sandbox goes to the host that holds it (never another), with the snapshot's template, vCPUs and
   * memory. A snapshot that is not the team's, or not ready, is NOT_FOUND.
   */
  snapshotId?: string;
}

/** A created sandbox and the token envd expects in `X-Access-Token` (for SDKs that talk to envd). */
export interface CreatedSandbox {
  sandbox: SandboxView;
  envdAccessToken: string;
  /** The token its ports require (`e2b-traffic-access-token`), when `network.allowPublicTraffic` is false. */
  trafficAccessToken?: string;
}

/** The lifecycle policy's rules (E2B's): a pause without memory only at a pause timeout, and never woken by traffic. */
function checkLifecycle(input: CreateSandboxInput): void {
  if (input.keepMemory !== false) return;
  if (input.onTimeout !== "pause") {
    throw new BadRequestError("keepMemory=false applies to a pause at the timeout; it needs onTimeout=pause", {
      keepMemory: "needs onTimeout=pause",
    });
  }
  if (input.autoResume) {
    throw new BadRequestError(
      "keepMemory=false cannot be combined with autoResume: a sandbox paused without memory reboots on resume, so only connect or resume may wake it",
      { keepMemory: "conflicts with autoResume" },
    );
  }
}

/**
 * Creates a sandbox: check the team's timeout limits, pick a host that offers the required isolation
 * (the stronger of the request's and the team's minimum), then — in one transaction that locks the
 * team row — check the team's running quotas and write the row as `pending` (so a crash from here on
 * leaves a row the reconcile sweep converges), ask the agent to start it under our id, then record
 * `running` — or `error` with the reason. A failed start is cleaned up on the host when the agent can
 * be reached; otherwise the sweep destroys it later, because the row says `error`.
 */
export async function createSandbox(ctx: TeamContext, input: CreateSandboxInput): Promise<CreatedSandbox> {
  const teamId = ctx.principal.teamId;
  const network = input.network ? checkNetworkPolicy(input.network) : undefined;
  checkLifecycle(input);
  const snapshot = input.snapshotId === undefined ? undefined : await loadReadySnapshot(ctx, input.snapshotId);
  if (snapshot) {
    input = { ...input, template: snapshot.template, vcpus: snapshot.vcpus, memoryMb: snapshot.memoryMb };
  } else {
    // A template the team built (by alias or id) is held by the agents under its id.
    input = { ...input, template: await resolveTemplateForSandbox(ctx, input.template) };
  }
  const policy = await loadTeamPolicy(ctx.db, teamId);
  checkTimeoutQuota(policy.quotas, input.timeoutSec);
  // A cheap unlocked look first: a team already at its limit is refused without queueing on the
  // team lock (a client hammering creates at its quota then costs one read each). The locked check
  // below is the one that counts.
  admitRunning(policy.quotas, await sandboxUsage(ctx.db, teamId), input);
  const minIsolation = strongerIsolation(input.isolation, policy.team.minIsolation);
  const host = await pickHost(ctx, {
    template: input.template,
    vcpus: input.vcpus,
    memoryMb: input.memoryMb,
    minIsolation,
    ...(snapshot ? { onlyHost: { id: snapshot.hostId, why: `snapshot ${snapshot.id}` } } : {}),
  });
  const agent = await agentFor(ctx, host);
  const id = newSandboxId();
  const envdAccessToken = newEnvdAccessToken();
  const envdTokenSealed = await ctx.secrets.seal(envdAccessToken);
  const trafficAccessToken = network?.allowPublicTraffic === false ? newEnvdAccessToken() : undefined;
  const trafficTokenSealed = trafficAccessToken ? await ctx.secrets.seal(trafficAccessToken) : null;
  const now = ctx.now();
  const pending = await ctx.db.transaction(async (tx) => {
    // The lock serialises the count-then-insert of every admission of this team (see lockTeam).
    const team = await lockTeam(tx, teamId);
    admitRunning(effectiveQuotas(team.quotas), await sandboxUsage(tx, teamId), input);
    const [row] = await tx
      .insert(sandboxes)
      .values({
        id,
        teamId,
        hostId: host.id,
        runtime: host.runtime,
        isolation: host.isolation,
        template: input.template,
        state: "pending",
        vcpus: input.vcpus,
        memoryMb: input.memoryMb,
        timeoutSec: input.timeoutSec,
        onTimeout: input.onTimeout,
        autoResume: input.autoResume ?? false,
        keepMemory: input.keepMemory ?? true,
        metadata: input.metadata,
        network: network ?? null,
        internetAccess: input.internetAccess ?? null,
        envdTokenSealed,
        trafficTokenSealed,
        createdAt: now,
        updatedAt: now,
      })
      .returning();
    if (!row) throw new Error("insert into sandboxes returned no row");
    await tx.insert(sandboxEvents).values({
      sandboxId: id,
      teamId: row.teamId,
      type: "created",
      toState: "pending",
      detail: {
        hostId: host.id,
        template: input.template,
        isolation: host.isolation,
        minIsolation,
        ...(snapshot ? { snapshotId: snapshot.id } : {}),
      },
      createdAt: now,
    });
    await recordSandboxChange(tx, {
      teamId: row.teamId,
      sandboxId: id,
      hostId: host.id,
      fromState: null,
      toState: "pending",
      detail: { template: input.template, isolation: host.isolation, ...(snapshot ? { snapshotId: snapshot.id } : {}) },
      at: now,
    });
    await recordAudit(
      ctx,
      {
        action: "sandbox.create",
        objectType: "sandbox",
        objectId: id,
        details: { template: input.template, hostId: host.id },
      },
      tx,
    );
    return row;
  });
  const log = ctx.logger.child({ sandboxId: id, hostId: host.id });

  let started: Awaited<ReturnType<typeof agent.createSandbox>>;
  try {
    started = await agent.createSandbox(
      {
        sandboxId: id,
        template: input.template,
        vcpus: input.vcpus,
        memoryMb: input.memoryMb,
        timeoutSec: input.timeoutSec,
        timeoutAction: timeoutActionToAgent(input.onTimeout),
        timeoutKeepMemory: input.keepMemory ?? true,
        envVars: input.envVars,
        metadata: input.metadata,
        envdAccessToken,
        internetAccess: input.internetAccess,
        network: policyToAgent(network),
        ...(snapshot ? { snapshotId: snapshot.id } : {}),
      },
      { timeoutMs: agentTimeouts.lifecycle },
    );
  } catch (err) {
    const failure = agentErrorToServiceError(err, "create sandbox");
    log.warn("create sandbox failed", { err, code: failure.code });
    await compareAndSet(
      ctx.db,
      pending,
      { state: "error", error: failure.message, stoppedAt: ctx.now() },
      { type: "error", detail: { code: failure.code } },
      ctx.now(),
    );
    if (!isAgentAnswer(err)) {
      // The agent may have started it before the connection failed; try to clean up, else the sweep will.
      agent.destroySandbox({ sandboxId: id }, { timeoutMs: agentTimeouts.default }).catch(() => {});
    }
    throw failure;
  }

  const reported = started.sandbox;
  const running = await compareAndSet(
    ctx.db,
    pending,
    {
      state: reported ? stateFromAgent(reported.state) : "running",
      endAt: dateOrNull(reported?.endAt),
      envdVersion: reported?.envdVersion ?? "",
      startedAt: ctx.now(),
    },
    { type: "started" },
    ctx.now(),
  );
  let result: SandboxRow | null = running;
  if (!result) {
    // Someone (a delete, or the sweep) changed the row while the agent was starting it.
    result = await reloadSandbox(ctx.db, id);
    if (result?.state === "stopped" || result?.state === "error") {
      await agent.destroySandbox({ sandboxId: id }, { timeoutMs: agentTimeouts.default }).catch(() => {});
    }
  }
  log.info("sandbox created", { state: result?.state });
  return {
    sandbox: toSandboxView(result ?? pending),
    envdAccessToken,
    ...(trafficAccessToken ? { trafficAccessToken } : {}),
  };
}
