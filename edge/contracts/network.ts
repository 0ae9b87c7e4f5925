/**
 * The vocabulary of a sandbox's egress policy and connection log as the API shows them. The rules
 * themselves (entry forms, precedence) are lib/egress-policy.ts; this file only names the shapes, so
 * the database schema, the services, the route schemas and the SDK (type-only) agree. Imports nothing.
 */

/** A sandbox's egress policy as stored and returned. */
export interface SandboxNetwork {
  /** Destinations always allowed: IPv4/IPv6 addresses, CIDRs, domains, `*.domain` wildcards. */
  allowOut: string[];
  /** Destinations denied unless allowed: the same forms; "0.0.0.0/0" is all traffic. */
  denyOut: string[];
  /** E2B's `allowPublicTraffic`: whether the sandbox's ports are reachable without a traffic token (true). */
  allowPublicTraffic?: boolean;
  /** E2B's `maskRequestHost`: the Host header of proxied requests to its ports, `${PORT}` replaced by the port. */
  maskRequestHost?: string;
  /**
   * E2B's `httpsPorts`: ports whose servers speak TLS; the proxy connects to them with TLS (not
   * verifying the guest's certificate) while clients keep the edge's scheme.
   */
  httpsPorts?: number[];
}

/** How a logged connection attempt was made: a TCP connection, a UDP flow, or a DNS question. */
export const connectionProtocols = ["tcp", "udp", "dns"] as const;
/** One of `connectionProtocols`. */
export type ConnectionProtocolName = (typeof connectionProtocols)[number];

/** What the policy decided. */
export const connectionVerdicts = ["allowed", "denied"] as const;
/** One of `connectionVerdicts`. */
export type ConnectionVerdictName = (typeof connectionVerdicts)[number];

/** Where a logged connection's name came from: the DNS question, the TLS server name, the HTTP Host. */
export const nameSources = ["dns", "sni", "host"] as const;
/** One of `nameSources`. */
export type NameSourceName = (typeof nameSources)[number];

/** One outbound connection attempt of a sandbox, as `GET /v1/sandboxes/{id}/connections` returns it. */
export interface ConnectionRecord {
  /** Position in the sandbox's log (increasing): the `after` cursor. */
  seq: number;
  /** When the decision was made (ISO 8601). */
  time: string;
  protocol: ConnectionProtocolName;
  /** Destination address (for a DNS question: the answer's first address); null when there is none. */
  address: string | null;
  port: number;
  /** The name asked for (DNS) or seen (TLS SNI, HTTP Host); null when none is known. */
  name: string | null;
  nameSource: NameSourceName | null;
  verdict: ConnectionVerdictName;
  /** The rule that decided: an allowOut/denyOut entry, "default", or the platform block. */
  rule: string;
  /** The list the rule is in: allowOut, denyOut, default, internet-off, platform, no-name. */
  list: string;
  /** Bytes from the sandbox, once the connection ended; null before or for a refused attempt. */
  bytesOut: number | null;
  /** Bytes to the sandbox, once the connection ended; null before or for a refused attempt. */
  bytesIn: number | null;
  /** When the connection ended, or a DNS question or refusal was answered (ISO 8601); null while open. */
  endedAt: string | null;
  /** For a DNS question: every address the answer carried (empty otherwise). */
  addresses: string[];
}
