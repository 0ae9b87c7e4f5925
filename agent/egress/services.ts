import type { AgentConfig } from "../config.js";
import type { Exec } from "../exec.js";
import type { Logger } from "../logger.js";
import { makeTransparent } from "../network/transparent.js";
import type { ConnectionLog } from "./connection-log.js";
import { FlowLog, type FlowTargets } from "./flows.js";
import { EgressProxy } from "./proxy.js";
import { ResolvedNames } from "./resolved-names.js";
import { EgressResolver } from "./resolver.js";
import { SpliceRelay } from "./splice-relay.js";
import { type EgressLookup, hostAddresses } from "./targets.js";

/** The agent's running egress services: the resolver and the proxy. */
export interface EgressServices {
  resolver: EgressResolver;
  proxy: EgressProxy;
  /** The log of flows the kernel decides (when `flows` was given). */
  flows: FlowLog | undefined;
  close(): Promise<void>;
}

export interface EgressServicesDeps {
  config: Pick<AgentConfig, "egressServices">;
  exec: Exec;
  logger: Logger;
  /** The sandbox manager's registry (manager.egressTargets). */
  targets: EgressLookup;
  log: ConnectionLog;
  /** Where the proxy's kernel relay (relay.c) is built; without it, or without cc, the proxy relays in Node. */
  relayDir?: string;
  /**
   * Log the flows the kernel decides too (conntrack events and the slots' denied sets): every sandbox
   * holding a slot, and the agent's slot range (AGENT_NET_CIDR).
   */
  flows?: { targets: FlowTargets; slotCidr: string };
}

/**
 * Starts the resolver (UDP+TCP on AGENT_DNS_PORT) and the proxy (AGENT_EGRESS_HTTP_PORT,
 * AGENT_EGRESS_TLS_PORT, made IP_TRANSPARENT for AnyIP). A port in use or a listener that cannot be
 * made transparent fails the start with a message naming the cause; nothing is left listening then.
 */
export async function startEgressServices(deps: EgressServicesDeps): Promise<EgressServices> {
  const { config, exec, logger, targets, log } = deps;
  const c = config.egressServices;
  const localAddresses = hostAddresses();
  const resolvedNames = new ResolvedNames();
  const prune = setInterval(() => resolvedNames.prune(), 60_000);
  prune.unref();
  const resolver = new EgressResolver({
    targets,
    log,
    logger: logger.child({ component: "egress-resolver" }),
    upstreams: c.dnsUpstream,
    port: c.dnsPort,
    localAddresses,
    resolvedNames,
  });
  const relay =
    deps.relayDir === undefined
      ? undefined
      : new SpliceRelay({ exec, logger: logger.child({ component: "egress-relay" }), dir: deps.relayDir });
  const relayStarted = (await relay?.start()) ?? false;
  const proxy = new EgressProxy({
    targets,
    log,
    logger: logger.child({ component: "egress-proxy" }),
    httpPort: c.httpPort,
    tlsPort: c.tlsPort,
    localAddresses,
    resolvedNames,
    ...(relayStarted ? { relay } : {}),
    prepareListener: async (server) => {
      try {
        await makeTransparent(server, exec);
      } catch (err) {
        throw new Error(
          `the egress proxy's listener could not be made IP_TRANSPARENT (needs python3 and Linux >= 5.6): ${(err as Error).message}`,
          { cause: err },
        );
      }
    },
  });
  if (c.dnsUpstream.length === 0) {
    logger.warn(
      "the egress resolver has no upstream: set AGENT_DNS_UPSTREAM (the host's resolv.conf has no nameserver)",
    );
  }
  const flows = deps.flows
    ? new FlowLog({
        targets: deps.flows.targets,
        slotCidr: deps.flows.slotCidr,
        log,
        logger: logger.child({ component: "egress-flows" }),
        exec,
        servicePorts: [c.httpPort, c.tlsPort, c.dnsPort],
        ...(c.idleLogPollMs !== undefined ? { idlePollMs: c.idleLogPollMs } : {}),
        resolvedNames,
        localAddresses,
      })
    : undefined;
  try {
    await resolver.start();
    await proxy.start();
    await flows?.start();
  } catch (err) {
    clearInterval(prune);
    await resolver.close();
    await relay?.close();
    throw err;
  }
  return {
    resolver,
    proxy,
    flows,
    close: async () => {
      clearInterval(prune);
      await Promise.all([resolver.close(), proxy.close(), flows?.close()]);
      await relay?.close();
      await log.flush();
    },
  };
}
