import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { EgressPolicyError, parseEgressPolicy } from "../../../lib/egress-policy.js";
import {
  type ConnectionEntry,
  ConnectionProtocol,
  ConnectionVerdict,
  type EgressPolicySchema,
  NameSource,
} from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import { agentErrorToServiceError, agentTimeouts } from "../../clients/agent.js";
import type {
  ConnectionProtocolName,
  ConnectionRecord,
  ConnectionVerdictName,
  NameSourceName,
  SandboxNetwork,
} from "../../contracts/network.js";
import type { SandboxRow } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { ConflictError, ServiceError } from "../errors.js";
import { loadPlacedSandbox, type PlacedSandbox } from "./load.js";
import { compareAndSet, reloadSandbox } from "./transition.js";
import { type SandboxView, toSandboxView } from "./view.js";

/**
 * A sandbox's egress policy and connection log: validation (lib/egress-policy.ts, one rule set for
 * edge and agent), the change while it runs, and reading the log from the sandbox's host, which keeps
 * it (also after the sandbox ended, for 24 hours).
 */

/**
 * Validates a policy; the error (INVALID_NETWORK_POLICY, 400) names the list and the entry. `field`
 * prefixes the detail key (`network` on /v1, the body root on E2B's update).
 */
export function checkNetworkPolicy(network: SandboxNetwork, field = "network"): SandboxNetwork {
  for (const list of ["allowOut", "denyOut"] as const) {
    try {
      parseEgressPolicy({ allowOut: [], denyOut: [], [list]: network[list] });
    } catch (err) {
      if (!(err instanceof EgressPolicyError)) throw err;
      const key = field ? `${field}.${list}` : list;
      throw new ServiceError("INVALID_NETWORK_POLICY", `${key}: ${err.message}`, { details: { [key]: err.message } });
    }
  }
  const checked: SandboxNetwork = { allowOut: [...network.allowOut], denyOut: [...network.denyOut] };
  if (network.allowPublicTraffic !== undefined) checked.allowPublicTraffic = network.allowPublicTraffic;
  if (network.maskRequestHost !== undefined) {
    const key = field ? `${field}.maskRequestHost` : "maskRequestHost";
    if (maskedHost(network.maskRequestHost, 65535) === undefined) {
      const message = `must be a host name or address with an optional port, where ${PORT_PLACEHOLDER} stands for the port asked for (e.g. localhost:${PORT_PLACEHOLDER})`;
      throw new ServiceError("INVALID_NETWORK_POLICY", `${key}: ${message}`, { details: { [key]: message } });
    }
    checked.maskRequestHost = network.maskRequestHost;
  }
  if (network.httpsPorts !== undefined) {
    const key = field ? `${field}.httpsPorts` : "httpsPorts";
    const bad = network.httpsPorts.find((p) => !Number.isInteger(p) || p < 1 || p > 65_535 || p === ENVD_PORT);
    if (bad !== undefined || network.httpsPorts.length > 64) {
      const message =
        bad !== undefined
          ? `${bad} is not a port the proxy can speak TLS to (1–65535, not envd's ${ENVD_PORT})`
          : "at most 64 ports";
      throw new ServiceError("INVALID_NETWORK_POLICY", `${key}: ${message}`, { details: { [key]: message } });
    }
    checked.httpsPorts = [...new Set(network.httpsPorts)].sort((a, b) => a - b);
  }
  return checked;
}

/** envd's port: always plain HTTP between the proxy and the guest. */
const ENVD_PORT = 49983;

/** E2B's placeholder in `maskRequestHost` for the port a request was sent to. */
const PORT_PLACEHOLDER = ["$", "{PORT}"].join("");

/** A Host header value: a name or address with an optional port, nothing that could split a header. */
const HOST_VALUE = /^(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

/**
 * E2B's `maskRequestHost` for one request: the Host header a sandbox's server sees when traffic comes
 * through the proxy, with `${PORT}` replaced by the port asked for; undefined when the result is not a
 * valid Host value (at most 255 characters).
 */
export function maskedHost(mask: string, port: number): string | undefined {
  const host = mask.replaceAll(PORT_PLACEHOLDER, String(port));
  return host.length <= 255 && HOST_VALUE.test(host) ? host : undefined;
}

/** The agent's policy message for a stored policy (unset when there is none). */
export function policyToAgent(
  network: SandboxNetwork | null | undefined,
): MessageInitShape<typeof EgressPolicySchema> | undefined {
  if (!network) return undefined;
  return { allowOut: network.allowOut, denyOut: network.denyOut };
}

/** Input of `updateSandboxNetwork`: the new rules replace the old ones whole. */
export interface UpdateNetworkInput {
  allowOut: string[];
  denyOut: string[];
  /** The new internet switch; unset keeps the current one. */
  internetAccess?: boolean;
}

/**
 * Replaces the egress policy of a running or paused sandbox: the host applies it (new connections
 * follow it within a second), then the row records it. Other E2B settings (`allowPublicTraffic`)
 * are kept.
 */
export async function updateSandboxNetwork(
  ctx: TeamContext,
  sandboxId: string,
  input: UpdateNetworkInput,
): Promise<SandboxView> {
  const checked = checkNetworkPolicy({ allowOut: input.allowOut, denyOut: input.denyOut });
  const placed = await loadPlacedSandbox(ctx, sandboxId);
  const state = placed.sandbox.state;
  if (state !== "running" && state !== "paused") {
    throw new ConflictError(`sandbox ${sandboxId} is ${state}; its network can change only while running or paused`);
  }
  try {
    await placed.agent.updateSandboxNetwork(
      { sandboxId, network: policyToAgent(checked), internetAccess: input.internetAccess },
      { timeoutMs: agentTimeouts.default },
    );
  } catch (err) {
    throw agentErrorToServiceError(err, "update network");
  }
  let row: SandboxRow | null = placed.sandbox;
  for (let attempt = 0; attempt < 5 && row; attempt++) {
    const network: SandboxNetwork = { ...(row.network ?? {}), allowOut: checked.allowOut, denyOut: checked.denyOut };
    const updated = await compareAndSet(
      ctx.db,
      row,
      { network, ...(input.internetAccess !== undefined ? { internetAccess: input.internetAccess } : {}) },
      {
        type: "network_set",
        detail: {
          allowOut: checked.allowOut.length,
          denyOut: checked.denyOut.length,
          ...(input.internetAccess !== undefined ? { internetAccess: input.internetAccess } : {}),
        },
      },
      ctx.now(),
    );
    if (updated) return toSandboxView(updated);
    row = await reloadSandbox(ctx.db, sandboxId);
  }
  throw new ConflictError(`sandbox ${sandboxId} kept changing; try again`);
}

/** Filters and cursor of a connection log read. */
export interface ConnectionQuery {
  /** Only entries after this seq. */
  after?: number;
  /** Most entries (1 to 1,000; default 100). */
  limit?: number;
  verdict?: ConnectionVerdictName;
  /** Only entries at or after this time. */
  since?: Date;
  protocol?: ConnectionProtocolName;
}

/** A page of a connection log. */
export interface ConnectionPage {
  connections: ConnectionRecord[];
  /** Cursor for the next page (`after`), or null when this page reached the end of the log. */
  nextAfter: number | null;
}

const VERDICT_TO: Record<ConnectionVerdictName, ConnectionVerdict> = {
  allowed: ConnectionVerdict.ALLOWED,
  denied: ConnectionVerdict.DENIED,
};
const PROTOCOL_TO: Record<ConnectionProtocolName, ConnectionProtocol> = {
  tcp: ConnectionProtocol.TCP,
  udp: ConnectionProtocol.UDP,
  dns: ConnectionProtocol.DNS,
};
const PROTOCOL_FROM: Partial<Record<ConnectionProtocol, ConnectionProtocolName>> = {
  [ConnectionProtocol.TCP]: "tcp",
  [ConnectionProtocol.UDP]: "udp",
  [ConnectionProtocol.DNS]: "dns",
};
const NAME_SOURCE_FROM: Partial<Record<NameSource, NameSourceName>> = {
  [NameSource.DNS]: "dns",
  [NameSource.SNI]: "sni",
  [NameSource.HOST]: "host",
};

/** One log entry from the agent, in the API's shape. */
export function connectionFromAgent(e: ConnectionEntry): ConnectionRecord {
  return {
    seq: Number(e.seq),
    time: e.time ? timestampDate(e.time).toISOString() : new Date(0).toISOString(),
    protocol: PROTOCOL_FROM[e.protocol] ?? "tcp",
    address: e.address === "" ? null : e.address,
    port: e.port,
    name: e.name === "" ? null : e.name,
    nameSource: NAME_SOURCE_FROM[e.nameSource] ?? null,
    verdict: e.verdict === ConnectionVerdict.DENIED ? "denied" : "allowed",
    rule: e.rule,
    list: e.list,
    bytesOut: e.bytesOut === undefined ? null : Number(e.bytesOut),
    bytesIn: e.bytesIn === undefined ? null : Number(e.bytesIn),
    endedAt: e.endedAt ? timestampDate(e.endedAt).toISOString() : null,
    addresses: [...e.addresses],
  };
}

/**
 * The sandbox and its host for a log read: any state, because the host keeps the log after the
 * sandbox ended. A sandbox whose host was removed has no log left to read.
 */
async function placedForLog(ctx: TeamContext, sandboxId: string): Promise<PlacedSandbox> {
  try {
    return await loadPlacedSandbox(ctx, sandboxId);
  } catch (err) {
    if (err instanceof ConflictError) {
      throw new ConflictError(
        `sandbox ${sandboxId} has no host (it never started, or its host was removed); its connection log is gone`,
      );
    }
    throw err;
  }
}

/** Reads a page of a sandbox's connection log (oldest first) from its host. */
export async function listConnections(
  ctx: TeamContext,
  sandboxId: string,
  query: ConnectionQuery,
): Promise<ConnectionPage> {
  const { agent } = await placedForLog(ctx, sandboxId);
  const limit = query.limit ?? 100;
  try {
    const res = await agent.listConnections(
      {
        sandboxId,
        afterSeq: BigInt(query.after ?? 0),
        limit,
        verdict: query.verdict ? VERDICT_TO[query.verdict] : ConnectionVerdict.UNSPECIFIED,
        protocol: query.protocol ? PROTOCOL_TO[query.protocol] : ConnectionProtocol.UNSPECIFIED,
        since: query.since ? timestampFromDate(query.since) : undefined,
      },
      { timeoutMs: agentTimeouts.default },
    );
    return {
      connections: res.entries.map(connectionFromAgent),
      nextAfter: res.nextAfter > 0n ? Number(res.nextAfter) : null,
    };
  } catch (err) {
    throw agentErrorToServiceError(err, "list connections");
  }
}

/**
 * Follows a sandbox's connection log: the entries after `after`, then each new one as the host
 * records it (an entry comes again when its connection ends, with bytes and `endedAt`), until
 * `signal` aborts. The sandbox and its host are checked before the stream starts.
 */
export async function watchConnections(
  ctx: TeamContext,
  sandboxId: string,
  query: Pick<ConnectionQuery, "after" | "verdict" | "protocol">,
  signal: AbortSignal,
): Promise<AsyncIterable<ConnectionRecord>> {
  const { agent } = await placedForLog(ctx, sandboxId);
  const stream = agent.watchConnections(
    {
      sandboxId,
      afterSeq: BigInt(query.after ?? 0),
      verdict: query.verdict ? VERDICT_TO[query.verdict] : ConnectionVerdict.UNSPECIFIED,
      protocol: query.protocol ? PROTOCOL_TO[query.protocol] : ConnectionProtocol.UNSPECIFIED,
    },
    { signal },
  );
  return (async function* records(): AsyncGenerator<ConnectionRecord> {
    try {
      for await (const msg of stream) if (msg.entry) yield connectionFromAgent(msg.entry);
    } catch (err) {
      if (signal.aborted) return;
      throw agentErrorToServiceError(err, "watch connections");
    }
  })();
}
