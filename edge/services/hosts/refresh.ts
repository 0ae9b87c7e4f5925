import { eq } from "drizzle-orm";
import type { GetHostInfoResponse } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import { agentErrorToServiceError, agentTimeouts, type HostTarget } from "../../clients/agent.js";
import { type HostRow, hosts } from "../../db/schema/index.js";
import { runtimeName } from "../agent-mapping.js";
import type { ServiceContext } from "../context.js";
import { isolationFromAgent } from "../scheduler/isolation.js";

/** Host columns that GetHostInfo fills in. */
export function hostInfoColumns(info: GetHostInfoResponse) {
  const runtime = runtimeName(info.runtime);
  return {
    runtime,
    isolation: isolationFromAgent(info.isolation, runtime),
    capacityVcpus: info.capacity?.vcpus ?? 0,
    capacityMemoryMb: info.capacity?.memoryMb ?? 0,
    capacityMaxSandboxes: info.capacity?.maxSandboxes ?? 0,
    pauseToDisk: info.pauseToDisk,
    snapshotsKeepMemory: info.snapshotsKeepMemory,
    templates: [...info.templates],
    agentVersion: info.agentVersion,
    envdVersion: info.envdVersion,
  };
}

/** Calls GetHostInfo on an agent; failures become ServiceErrors (AGENT_UNAVAILABLE when unreachable). */
export async function fetchHostInfo(ctx: ServiceContext, target: HostTarget): Promise<GetHostInfoResponse> {
  try {
    return await ctx.agents.client(target, ctx.requestId).getHostInfo({}, { timeoutMs: agentTimeouts.hostInfo });
  } catch (err) {
    throw agentErrorToServiceError(err, `host agent at ${target.address}`);
  }
}

/** Stores what a host just reported and marks it seen; used by register and by the reconcile sweep. */
export async function recordHostInfo(ctx: ServiceContext, host: HostRow, info: GetHostInfoResponse): Promise<HostRow> {
  const [row] = await ctx.db
    .update(hosts)
    .set({ ...hostInfoColumns(info), lastSeenAt: ctx.now(), updatedAt: ctx.now(), lastError: null })
    .where(eq(hosts.id, host.id))
    .returning();
  return row ?? host;
}
