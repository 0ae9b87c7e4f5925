import type { AgentClient, HostTarget } from "../../clients/agent.js";
import type { HostRow } from "../../db/schema/index.js";
import type { ServiceContext } from "../context.js";

/** Decrypts a host's token and returns what the agent connector needs. */
export async function hostTarget(ctx: ServiceContext, host: HostRow): Promise<HostTarget> {
  const target: HostTarget = { id: host.id, address: host.address, token: await ctx.secrets.open(host.tokenSealed) };
  if (host.tlsPin !== null || host.caPem !== null) {
    target.tls = {
      ...(host.tlsPin !== null ? { certSha256: host.tlsPin } : {}),
      ...(host.caPem !== null ? { caPem: host.caPem } : {}),
    };
  }
  return target;
}

/** A Connect client for a host, carrying the request id. */
export async function agentFor(ctx: ServiceContext, host: HostRow): Promise<AgentClient> {
  return ctx.agents.client(await hostTarget(ctx, host), ctx.requestId);
}
