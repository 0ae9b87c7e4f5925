import { eq } from "drizzle-orm";
import type { HostTarget } from "../../clients/agent.js";
import { type HostRow, hosts, type SandboxRow, sandboxes } from "../../db/schema/index.js";
import type { ServiceContext, TeamContext } from "../context.js";
import { ConflictError } from "../errors.js";
import { hostTarget } from "../hosts/target.js";
import { sandboxIdPattern } from "../ids.js";
import { isPastEnd, repairExpired } from "../sandboxes/expiry.js";
import { resumeSandbox } from "../sandboxes/resume.js";
import { settlePollMs, settleTimeoutMs, sleep, transitionalStates } from "./settle.js";
import { type SignedFileRequest, signedUrlIndexOf } from "./signed-url-index.js";

export type { SignedFileRequest } from "./signed-url-index.js";

/**
 * Where sandbox traffic goes. The sandbox proxy is not authenticated by API key (as E2B's is not):
 * envd checks its own access token, and user ports are public, so these lookups are not team-scoped.
 */
export type TrafficDestination =
  | {
      kind: "ready";
      sandboxId: string;
      target: HostTarget;
      /** The traffic access token its ports require (E2B's `allowPublicTraffic: false`), or null. */
      trafficToken: string | null;
      /** E2B's `maskRequestHost`: the Host its servers see (`${PORT}` not yet replaced), or null. */
      maskRequestHost: string | null;
      /** E2B's `httpsPorts`: ports the agent's proxy reaches with TLS. */
      httpsPorts: readonly number[];
    }
  | { kind: "not-found"; sandboxId: string }
  | { kind: "unavailable"; sandboxId: string; message: string };

async function loadWithHost(
  ctx: ServiceContext,
  sandboxId: string,
): Promise<{ sandbox: SandboxRow; host: HostRow | null } | undefined> {
  const [row] = await ctx.db
    .select({ sandbox: sandboxes, host: hosts })
    .from(sandboxes)
    .leftJoin(hosts, eq(hosts.id, sandboxes.hostId))
    .where(eq(sandboxes.id, sandboxId))
    .limit(1);
  return row;
}

/** A team context acting for the sandbox's owner, for the resume that traffic triggers. */
function ownerContext(ctx: ServiceContext, row: SandboxRow): TeamContext {
  return {
    ...ctx,
    principal: { teamId: row.teamId, keyId: "sandbox-proxy", isAdmin: false, scopes: [] },
    logger: ctx.logger.child({ teamId: row.teamId, sandboxId: row.id }),
  };
}

/**
 * Finds where traffic for a sandbox goes: its host when it runs. A paused sandbox that asked for
 * auto-resume is resumed first (concurrent requests wait for the one resume that wins); one that is
 * starting, pausing or resuming is waited for. Missing, stopped and paused ones are `not-found`, as
 * E2B's proxy answers.
 */
export async function resolveSandboxTraffic(ctx: ServiceContext, sandboxId: string): Promise<TrafficDestination> {
  if (!sandboxIdPattern.test(sandboxId)) return { kind: "not-found", sandboxId };
  const deadline = Date.now() + settleTimeoutMs;
  for (;;) {
    const row = await loadWithHost(ctx, sandboxId);
    if (!row) return { kind: "not-found", sandboxId };
    const { sandbox, host } = row;
    // Past its end time the host may have paused or killed it already: the row follows the host first.
    if (isPastEnd(sandbox, ctx.now()) && (await repairExpired(ctx, sandbox)).version !== sandbox.version) continue;
    if (sandbox.state === "running" && host) {
      const target = await hostTarget(ctx, host);
      const trafficToken =
        sandbox.trafficTokenSealed === null ? null : await ctx.secrets.open(sandbox.trafficTokenSealed);
      return {
        kind: "ready",
        sandboxId,
        target,
        trafficToken,
        maskRequestHost: sandbox.network?.maskRequestHost ?? null,
        httpsPorts: sandbox.network?.httpsPorts ?? [],
      };
    }
    if (sandbox.state === "missing") {
      return { kind: "unavailable", sandboxId, message: "the sandbox's host is not answering" };
    }
    // A sandbox paused without memory is never woken by traffic (as on E2B): resuming reboots it, so
    // only an explicit connect or resume may.
    if (sandbox.state === "paused" && sandbox.autoResume && !sandbox.pausedWithoutMemory) {
      try {
        await resumeSandbox(ownerContext(ctx, sandbox), sandboxId, {});
        ctx.logger.info("sandbox resumed by traffic", { sandboxId });
      } catch (err) {
        // Another request won the resume: wait for it like any transition.
        if (!(err instanceof ConflictError)) throw err;
      }
      continue;
    }
    const waiting = transitionalStates.has(sandbox.state) && (sandbox.state !== "pausing" || sandbox.autoResume);
    if (!waiting || Date.now() > deadline) return { kind: "not-found", sandboxId };
    await sleep(settlePollMs);
  }
}

/**
 * The sandbox whose envd token produced a `/files` URL's signature: the SDK's `uploadUrl` and
 * `downloadUrl` carry no sandbox id, so the signature is the only link. Answered from the process's
 * signed-URL index (no per-request scan of the database; see `SignedUrlIndex`). The signature's
 * expiry is left to envd, which answers an expired one with its own error.
 */
export async function findSandboxBySignature(
  ctx: ServiceContext,
  request: SignedFileRequest,
): Promise<string | undefined> {
  return signedUrlIndexOf(ctx).find(ctx, request);
}
