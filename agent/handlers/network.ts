import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { EgressPolicy } from "../../lib/egress-policy.js";
import {
  type ConnectionEntry,
  ConnectionEntrySchema,
  ConnectionProtocol,
  ConnectionVerdict,
  type EgressPolicy as EgressPolicyMessage,
  EgressPolicySchema,
  NameSource,
} from "../../proto/gen/hostagent/v1/hostagent_pb.js";

/**
 * Egress policy and connection log conversions between the agent's own types and the HostAgentService
 * messages, plus the shapes the handlers need from the manager (policy updates) and the connection log.
 */

export type LogProtocol = "tcp" | "udp" | "dns";
export type LogVerdict = "allowed" | "denied";
export type LogNameSource = "dns" | "sni" | "host";

/** One connection attempt as the agent's connection log keeps it. */
export interface LogEntry {
  seq: number;
  /** Epoch milliseconds of the decision. */
  time: number;
  protocol: LogProtocol;
  address: string;
  port: number;
  name?: string;
  nameSource?: LogNameSource;
  verdict: LogVerdict;
  rule: string;
  list: string;
  bytesOut?: number;
  bytesIn?: number;
  /** Epoch milliseconds of the connection's end. */
  endedAt?: number;
  /** For a DNS question: the answer's addresses. */
  addresses?: string[];
}

export interface LogQuery {
  after?: number;
  limit: number;
  verdict?: LogVerdict;
  since?: number;
  protocol?: LogProtocol;
}

/** What the handlers read from the agent's connection log. */
export interface ConnectionLogReader {
  list(sandboxId: string, query: LogQuery): LogEntry[] | Promise<LogEntry[]>;
  watch(sandboxId: string, after: number, signal: AbortSignal): AsyncIterable<LogEntry>;
}

export const DEFAULT_CONNECTIONS_LIMIT = 100;
export const MAX_CONNECTIONS_LIMIT = 1000;

const PROTOCOL_TO: Record<LogProtocol, ConnectionProtocol> = {
  tcp: ConnectionProtocol.TCP,
  udp: ConnectionProtocol.UDP,
  dns: ConnectionProtocol.DNS,
};
const VERDICT_TO: Record<LogVerdict, ConnectionVerdict> = {
  allowed: ConnectionVerdict.ALLOWED,
  denied: ConnectionVerdict.DENIED,
};
const NAME_SOURCE_TO: Record<LogNameSource, NameSource> = {
  dns: NameSource.DNS,
  sni: NameSource.SNI,
  host: NameSource.HOST,
};

export function protocolFromProto(p: ConnectionProtocol): LogProtocol | undefined {
  return (Object.keys(PROTOCOL_TO) as LogProtocol[]).find((k) => PROTOCOL_TO[k] === p);
}

export function verdictFromProto(v: ConnectionVerdict): LogVerdict | undefined {
  return (Object.keys(VERDICT_TO) as LogVerdict[]).find((k) => VERDICT_TO[k] === v);
}

/** The policy message, or undefined for no policy (so `network` stays unset on the wire). */
export function policyToProto(policy: EgressPolicy | undefined): EgressPolicyMessage | undefined {
  if (!policy) return undefined;
  return create(EgressPolicySchema, { allowOut: policy.allowOut, denyOut: policy.denyOut });
}

export function policyFromProto(message: EgressPolicyMessage | undefined): EgressPolicy | undefined {
  if (!message) return undefined;
  return { allowOut: [...message.allowOut], denyOut: [...message.denyOut] };
}

export function entryToProto(e: LogEntry): ConnectionEntry {
  return create(ConnectionEntrySchema, {
    seq: BigInt(e.seq),
    time: timestampFromMs(e.time),
    protocol: PROTOCOL_TO[e.protocol] ?? ConnectionProtocol.UNSPECIFIED,
    address: e.address,
    port: e.port,
    name: e.name ?? "",
    nameSource: e.nameSource === undefined ? NameSource.UNSPECIFIED : NAME_SOURCE_TO[e.nameSource],
    verdict: VERDICT_TO[e.verdict],
    rule: e.rule,
    list: e.list,
    bytesOut: e.bytesOut === undefined ? undefined : BigInt(e.bytesOut),
    bytesIn: e.bytesIn === undefined ? undefined : BigInt(e.bytesIn),
    endedAt: e.endedAt === undefined ? undefined : timestampFromMs(e.endedAt),
    addresses: e.addresses ?? [],
  });
}
