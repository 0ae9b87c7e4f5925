import type { EgressRule, ParsedEgressPolicy } from "../../lib/egress-policy.js";
import { formatIpv4, type Ipv4Network, parseIpv4 } from "../config.js";
import {
  GATEWAY_IP,
  GUEST_IP,
  GUEST_LINK,
  GUEST_PREFIX_LENGTH,
  hostTableName,
  SLOT_IFACE,
  type SlotAddresses,
  TAP_NAME,
} from "./addresses.js";

/**
 * Generated text for `ip -batch` and `nft -f`, so a slot costs a few process spawns, not dozens.
 * Pure functions: the unit tests read the rules, the integration tests prove them.
 */

/** Destinations a sandbox may never open connections to: private, shared, link-local, loopback, test and multicast ranges. */
export const BLOCKED_RANGES = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.0.2.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "224.0.0.0/3",
] as const;

/** Whether an IPv4 address (dotted text) is in BLOCKED_RANGES; anything that is not IPv4 counts as blocked. */
export function isBlockedAddress(address: string): boolean {
  const value = parseIpv4(address);
  if (value === undefined) return true;
  return BLOCKED_RANGES.some((range) => {
    const [base, length] = range.split("/");
    const mask = Number(length) === 0 ? 0 : (0xffffffff << (32 - Number(length))) >>> 0;
    return (value & mask) >>> 0 === parseIpv4(base ?? "");
  });
}

/** Bounds of a dns_ok element's lifetime (the DNS answer's TTL, clamped). */
export const RESOLVED_TTL_MIN_SEC = 5;
export const RESOLVED_TTL_MAX_SEC = 3600;

/**
 * nft commands adding resolved addresses to a slot's `dns_ok` set for `ttlSec` (clamped). An address
 * already there gets the new timeout (delete-then-add in one transaction; the add before the delete
 * makes the delete never fail). Blocked and non-IPv4 addresses are left out; "" when none remain.
 */
export function allowResolvedCommands(addresses: readonly string[], ttlSec: number): string {
  const ttl = Math.round(Math.min(RESOLVED_TTL_MAX_SEC, Math.max(RESOLVED_TTL_MIN_SEC, ttlSec)));
  const fresh = [...new Set(addresses)].filter((a) => !isBlockedAddress(a));
  if (fresh.length === 0) return "";
  const plain = fresh.join(", ");
  const timed = fresh.map((a) => `${a} timeout ${ttl}s`).join(", ");
  return [
    `add element inet wrenn dns_ok { ${plain} }`,
    `delete element inet wrenn dns_ok { ${plain} }`,
    `add element inet wrenn dns_ok { ${timed} }`,
    "",
  ].join("\n");
}

/** DNS questions (UDP) per second a slot may send the agent's resolver, and the burst above it. */
export const RESOLVER_RATE_PER_SEC = 200;
export const RESOLVER_BURST = 400;

/** Bounds of a policy slot's set of denied attempts (destination . protocol . port) read by the flow log. */
export const DENIED_FLOWS_SIZE = 1024;
export const DENIED_FLOWS_TIMEOUT_SEC = 60;

/** Whether the guest is a VM behind a TAP, or processes living in the netns itself. */
export type SlotKind = "vm" | "namespace";

/** Root-netns commands that create the slot's netns and its veth pair (host end configured). */
export function hostBatch(slot: SlotAddresses): string {
  return [
    `netns add ${slot.netns}`,
    `link add ${slot.hostVeth} type veth peer name ${SLOT_IFACE} netns ${slot.netns}`,
    `addr add ${slot.hostIp}/30 dev ${slot.hostVeth}`,
    `link set ${slot.hostVeth} up`,
    "",
  ].join("\n");
}

/** Commands run inside the slot's netns: loopback, the veth end, the guest link, the default route. */
export function netnsBatch(slot: SlotAddresses, kind: SlotKind): string {
  const lines = [
    "link set lo up",
    `addr add ${slot.slotIp}/30 dev ${SLOT_IFACE}`,
    `link set ${SLOT_IFACE} up`,
    `route add default via ${slot.hostIp}`,
  ];
  if (kind === "vm") {
    lines.push(
      `tuntap add dev ${TAP_NAME} mode tap`,
      `addr add ${GATEWAY_IP}/${GUEST_PREFIX_LENGTH} dev ${TAP_NAME}`,
      `link set ${TAP_NAME} up`,
    );
  } else {
    // The namespace sandbox's processes share this netns: give them the guest address on loopback, so
    // the same DNAT and envd's port forwarding work as in a VM.
    lines.push(`addr add ${GUEST_IP}/32 dev lo`);
  }
  return `${lines.join("\n")}\n`;
}

/** Where a slot's inspected traffic goes in the root netns (AgentConfig.egressServices). */
export interface EgressPorts {
  /** The proxy's listener for port-80 connections. */
  httpPort: number;
  /** The proxy's listener for port-443 connections. */
  tlsPort: number;
  /** The resolver (UDP and TCP). */
  dnsPort: number;
  /** Firewall mark of slot packets to the proxy ports (root netns), routed by `routeTable`. */
  mark: number;
  /** Routing table with `local 0.0.0.0/0 dev lo`: every address is local for a marked packet (AnyIP). */
  routeTable: number;
}

export const DEFAULT_EGRESS_PORTS: EgressPorts = {
  httpPort: 15080,
  tlsPort: 15443,
  dnsPort: 15353,
  mark: 0x57e0,
  routeTable: 5780,
};

/** Preference of the fwmark rule: before the main table and before any iif rule of the tests. */
export const EGRESS_RULE_PREF = 1000;

export interface SlotRuleOptions {
  kind: SlotKind;
  /** Whether this sandbox may reach the internet (the agent's egress switch and the sandbox's own flag). */
  egress: boolean;
  /** The agent's egress services (the resolver port is accepted before the private-range drop). */
  ports?: EgressPorts;
}

/**
 * Anti-spoofing: the only source addresses a guest may send from. A VM's packets arrive on the TAP and
 * must carry the guest address (before the SNAT to the slot address). A namespace guest's processes
 * live in the netns itself, so its packets leave through the veth with either the slot address (the
 * kernel's choice for a new connection) or the guest address (a service bound to it, or an answer to
 * the host's DNATed connection). The slot has no IPv6, so every IPv6 packet from the guest is dropped.
 * Both chains hook at raw priority, before conntrack, so a forged packet never creates or matches state.
 */
function antiSpoofChains(slot: SlotAddresses, vm: boolean): string[] {
  return [
    // From a VM: checked as the packet enters the netns, for the forward and the input path alike.
    ...(vm
      ? [
          "  chain antispoof_guest {",
          "    type filter hook prerouting priority raw; policy accept;",
          `    iifname "${TAP_NAME}" ip saddr != ${GUEST_IP} counter name spoofed_dropped drop`,
          `    iifname "${TAP_NAME}" meta nfproto ipv6 counter name spoofed_dropped drop`,
          "  }",
        ]
      : []),
    // Sent from inside the netns (a namespace guest; for a VM slot only the netns's own ICMP errors).
    "  chain antispoof_local {",
    "    type filter hook output priority raw; policy accept;",
    `    oifname "${SLOT_IFACE}" ip saddr != { ${slot.slotIp}, ${GUEST_IP} } counter name spoofed_dropped drop`,
    `    oifname "${SLOT_IFACE}" meta nfproto ipv6 counter name spoofed_dropped drop`,
    "  }",
  ];
}

/**
 * Each dropped new TCP/UDP attempt of a guest is remembered (destination, protocol, port) for the agent's
 * connection log (agent/egress/flows.ts): a minute per destination (`add` does not refresh the timeout,
 * so what is left of it dates the first attempt), at most DENIED_FLOWS_SIZE at once, so a port scan fills
 * the set and is then dropped unremembered. A full set does not stop the drop.
 */
const DENIED_FLOWS_SET = `type ipv4_addr . inet_proto . inet_service; flags dynamic, timeout; size ${DENIED_FLOWS_SIZE}; timeout ${DENIED_FLOWS_TIMEOUT_SEC}s;`;
const REMEMBER_DENIED = "meta l4proto { tcp, udp } add @denied_flows { ip daddr . meta l4proto . th dport }";

/**
 * The firewall inside a slot's netns. The host reaches the guest at the slot address (DNAT to the guest);
 * the guest may answer, and may open connections only to public addresses and only when egress is on,
 * and only from its own address (anti-spoofing, above). Drops of private-range traffic are counted in
 * `private_dropped` and of forged sources in `spoofed_dropped`, so tests can see which rule acted.
 */
export function slotRules(slot: SlotAddresses, opts: SlotRuleOptions): string {
  const blocked = `{ ${BLOCKED_RANGES.join(", ")} }`;
  const vm = opts.kind === "vm";
  const ports = opts.ports ?? DEFAULT_EGRESS_PORTS;
  // The agent's resolver, reached only through the policy's DNAT of port 53 (a guest cannot forge
  // `ct status dnat`); accepted before the private-range drop, as the host end is in the slot range.
  const resolver = `ct status dnat ip daddr ${slot.hostIp} meta l4proto { tcp, udp } th dport ${ports.dnsPort} accept`;
  // One guest must not flood the resolver that every sandbox shares: the agent reads one UDP socket, and
  // the kernel drops what overflows it whoever sent it. Beyond this rate a slot's questions are dropped
  // here (counted in dns_dropped), so the others' still get through.
  const resolverLimit = `ct status dnat ip daddr ${slot.hostIp} udp dport ${ports.dnsPort} limit rate over ${RESOLVER_RATE_PER_SEC}/second burst ${RESOLVER_BURST} packets counter name dns_dropped drop`;
  const lines = [
    "table inet wrenn {",
    `  set blocked { type ipv4_addr; flags interval; elements = ${blocked} }`,
    // Egress policy (issue 20), filled by policyCommands(): allowOut and denyOut CIDRs, and addresses the
    // agent's resolver answered for allowed names (each for its answer's TTL).
    "  set allow_net { type ipv4_addr; flags interval; }",
    "  set deny_net { type ipv4_addr; flags interval; }",
    "  set dns_ok { type ipv4_addr; flags timeout; }",
    `  set denied_flows { ${DENIED_FLOWS_SET} }`,
    "  counter private_dropped {}",
    "  counter spoofed_dropped {}",
    "  counter policy_dropped {}",
    "  counter dns_dropped {}",
    ...antiSpoofChains(slot, vm),
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
    `    iifname "${SLOT_IFACE}" ip daddr ${slot.slotIp} dnat ip to ${GUEST_IP}`,
    vm ? `    iifname "${TAP_NAME}" jump policy_nat` : "",
    "  }",
    // A namespace guest's sockets live in this netns: its new connections pass the nat output hook.
    vm ? "" : "  chain nat_output {",
    vm ? "" : "    type nat hook output priority -100; policy accept;",
    vm ? "" : `    oifname "${SLOT_IFACE}" jump policy_nat`,
    vm ? "" : "  }",
    // The policy's redirections to the agent's resolver and proxy (empty without a policy).
    "  chain policy_nat {",
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    `    oifname "${SLOT_IFACE}" ip saddr ${GUEST_LINK} snat ip to ${slot.slotIp}`,
    "  }",
    "  chain input {",
    "    type filter hook input priority filter; policy drop;",
    '    iifname "lo" accept',
    "    ct state established,related accept",
    // Namespace runtime: the host's connections to the guest, after DNAT.
    vm ? "" : `    iifname "${SLOT_IFACE}" ip daddr ${GUEST_IP} ct state new ct status dnat accept`,
    "  }",
    "  chain forward {",
    "    type filter hook forward priority filter; policy drop;",
    // Before the established accept: a flood reuses one flow (one socket), every packet must count.
    vm ? `    iifname "${TAP_NAME}" oifname "${SLOT_IFACE}" ${resolverLimit}` : "",
    "    ct state established,related accept",
    vm ? `    iifname "${SLOT_IFACE}" oifname "${TAP_NAME}" ip daddr ${GUEST_IP} ct status dnat accept` : "",
    vm ? `    iifname "${TAP_NAME}" oifname "${SLOT_IFACE}" ${resolver}` : "",
    vm ? `    iifname "${TAP_NAME}" ip daddr @blocked ${REMEMBER_DENIED}` : "",
    vm ? `    iifname "${TAP_NAME}" ip daddr @blocked counter name private_dropped drop` : "",
    vm ? `    iifname "${TAP_NAME}" oifname "${SLOT_IFACE}" meta nfproto ipv4 jump egress` : "",
    "  }",
    "  chain output {",
    "    type filter hook output priority filter; policy drop;",
    '    oifname "lo" accept',
    vm ? "" : `    oifname "${SLOT_IFACE}" ${resolverLimit}`,
    "    ct state established,related accept",
    vm ? `    oifname "${TAP_NAME}" accept` : "",
    vm ? "" : `    oifname "${SLOT_IFACE}" ${resolver}`,
    `    oifname "${SLOT_IFACE}" ip daddr @blocked ${REMEMBER_DENIED}`,
    `    oifname "${SLOT_IFACE}" ip daddr @blocked counter name private_dropped drop`,
    vm ? "" : `    oifname "${SLOT_IFACE}" meta nfproto ipv4 jump egress`,
    "  }",
    // New connections of the guest to non-blocked addresses: without a policy, the internet switch alone.
    // Without egress the output/forward chain's policy drops what returns from here, remembered first.
    "  chain egress {",
    `    ${opts.egress ? "accept" : REMEMBER_DENIED}`,
    "  }",
    "}",
  ];
  return `${lines.filter((l) => l !== "").join("\n")}\n`;
}

/**
 * The CIDRs of an address list, IPv4 only (slots have no IPv6), without the ones inside another (an
 * nftables interval set refuses overlapping elements).
 */
export function ipv4Elements(rules: readonly EgressRule[]): string[] {
  const nets = rules
    .filter((r): r is Extract<EgressRule, { kind: "ipv4" }> => r.kind === "ipv4")
    .map((r) => ({ base: r.base, size: 2 ** (32 - r.prefixLength), text: r.text }))
    .sort((a, b) => a.base - b.base || b.size - a.size);
  const kept: typeof nets = [];
  for (const net of nets) {
    const last = kept[kept.length - 1];
    if (last && net.base >= last.base && net.base + net.size <= last.base + last.size) continue;
    kept.push(net);
  }
  return kept.map((n) => (n.text.endsWith("/32") ? n.text.slice(0, -3) : n.text));
}

export interface PolicyOptions {
  /** The effective internet switch (agent and sandbox). */
  internetAccess: boolean;
  /**
   * Whether DNS and ports 80/443 go through the agent's resolver and proxy (policies with domain
   * rules, or every policy when the agent inspects always).
   */
  inspect: boolean;
  ports: EgressPorts;
  /** Keep the resolved addresses (restart recovery re-applying the same policy); default: drop them. */
  keepResolved?: boolean;
}

/**
 * One nft transaction that replaces a slot's egress policy: its sets, its verdict chain and its
 * redirections, so new connections see either the old policy or the new one, never a mix. The
 * resolved addresses (dns_ok) are dropped too: a name the new policy no longer allows must not keep
 * its addresses open. An empty policy gives back the slot's rules as made (the internet switch alone).
 */
export function policyCommands(slot: SlotAddresses, policy: ParsedEgressPolicy, opts: PolicyOptions): string {
  const empty = policy.allow.length === 0 && policy.deny.length === 0;
  const allow = ipv4Elements(policy.allow);
  const deny = ipv4Elements(policy.deny);
  const { ports } = opts;
  const lines = [
    "flush chain inet wrenn policy_nat",
    "flush chain inet wrenn egress",
    "flush set inet wrenn allow_net",
    "flush set inet wrenn deny_net",
    opts.keepResolved ? "" : "flush set inet wrenn dns_ok",
    allow.length > 0 ? `add element inet wrenn allow_net { ${allow.join(", ")} }` : "",
    deny.length > 0 ? `add element inet wrenn deny_net { ${deny.join(", ")} }` : "",
  ];
  if (empty) {
    lines.push(`add rule inet wrenn egress ${opts.internetAccess ? "accept" : REMEMBER_DENIED}`);
    return `${lines.filter((l) => l !== "").join("\n")}\n`;
  }
  if (opts.inspect) {
    lines.push(
      // Whatever nameserver the guest uses, the agent's resolver answers.
      `add rule inet wrenn policy_nat meta l4proto { tcp, udp } th dport 53 dnat ip to ${slot.hostIp}:${ports.dnsPort}`,
      // Ports 80/443 to anything not allowed by address go to the proxy with their address kept (it
      // judges the SNI or Host and the address); blocked addresses are not redirected and stay dropped.
      `add rule inet wrenn policy_nat tcp dport 80 ip daddr != @allow_net ip daddr != @blocked dnat ip to ip daddr:${ports.httpPort}`,
      `add rule inet wrenn policy_nat tcp dport 443 ip daddr != @allow_net ip daddr != @blocked dnat ip to ip daddr:${ports.tlsPort}`,
      `add rule inet wrenn egress ct status dnat tcp dport { ${ports.httpPort}, ${ports.tlsPort} } accept`,
    );
  }
  const remember = REMEMBER_DENIED;
  lines.push(
    `add set inet wrenn denied_flows { ${DENIED_FLOWS_SET} }`,
    "add rule inet wrenn egress ip daddr @allow_net accept",
    "add rule inet wrenn egress ip daddr @dns_ok accept",
    `add rule inet wrenn egress ip daddr @deny_net ${remember}`,
    "add rule inet wrenn egress ip daddr @deny_net counter name policy_dropped drop",
    opts.internetAccess ? "" : `add rule inet wrenn egress ${remember}`,
    opts.internetAccess
      ? "add rule inet wrenn egress accept"
      : "add rule inet wrenn egress counter name policy_dropped drop",
  );
  return `${lines.filter((l) => l !== "").join("\n")}\n`;
}

/**
 * The agent's table in the root netns, matching every slot by interface-name prefix: slots may not
 * open connections to the host (its services, the agent's port) nor, through the host's forwarding,
 * to each other or to private ranges; egress is forwarded and masqueraded only when enabled.
 * Recreated atomically (add, delete, add) so a restart never leaves a gap or a duplicate.
 */
export function hostRules(
  prefix: string,
  cidr: Ipv4Network,
  egress: boolean,
  ports: EgressPorts = DEFAULT_EGRESS_PORTS,
): string {
  const table = hostTableName(prefix);
  const proxyPorts = `{ ${ports.httpPort}, ${ports.tlsPort} }`;
  const ifaces = `"${prefix}-*"`;
  const range = `${formatIpv4(cidr.base)}/${cidr.prefixLength}`;
  const lines = [
    `table inet ${table} {}`,
    `delete table inet ${table}`,
    `table inet ${table} {`,
    `  set blocked { type ipv4_addr; flags interval; elements = { ${BLOCKED_RANGES.join(", ")} } }`,
    // Egress policy (issue 20): a slot's port-80/443 connections, DNAT'd in the slot to the proxy's
    // ports with their original address kept, are marked so the fwmark rule routes them to the local
    // table (AnyIP) and the proxy's listener on 0.0.0.0 takes them with localAddress = that address.
    "  chain mark_proxy {",
    "    type filter hook prerouting priority mangle; policy accept;",
    `    iifname ${ifaces} tcp dport ${proxyPorts} meta mark set ${hex(ports.mark)}`,
    "  }",
    "  chain input {",
    "    type filter hook input priority filter - 10; policy accept;",
    `    iifname ${ifaces} ct state established,related accept`,
    // The agent's resolver, on the host end of a slot's veth (the slot DNATs port 53 there).
    `    iifname ${ifaces} ip daddr ${range} meta l4proto { tcp, udp } th dport ${ports.dnsPort} accept`,
    `    iifname ${ifaces} meta mark ${hex(ports.mark)} tcp dport ${proxyPorts} accept`,
    `    iifname ${ifaces} drop`,
    "  }",
    "  chain forward {",
    "    type filter hook forward priority filter - 10; policy accept;",
    `    iifname ${ifaces} oifname ${ifaces} drop`,
    // A marked packet is for the proxy; should the AnyIP route ever be missing, it is not forwarded on.
    `    iifname ${ifaces} meta mark ${hex(ports.mark)} drop`,
    `    oifname ${ifaces} ct state established,related accept`,
    `    oifname ${ifaces} drop`,
    `    iifname ${ifaces} ip daddr @blocked drop`,
    egress ? `    iifname ${ifaces} meta nfproto ipv4 accept` : "",
    `    iifname ${ifaces} drop`,
    "  }",
    egress ? "  chain postrouting {" : "",
    egress ? "    type nat hook postrouting priority srcnat; policy accept;" : "",
    egress ? `    ip saddr ${range} oifname != ${ifaces} masquerade` : "",
    egress ? "  }" : "",
    "}",
  ];
  return `${lines.filter((l) => l !== "").join("\n")}\n`;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/**
 * `ip -batch` commands for the AnyIP route of marked proxy packets: the table's local route (replace
 * is idempotent) and, when `hasRule` is false, the fwmark rule. Never removed (harmless without marks).
 */
export function anyIpBatch(ports: EgressPorts, hasRule: boolean): string {
  return [
    `route replace local 0.0.0.0/0 dev lo table ${ports.routeTable}`,
    hasRule ? "" : `rule add fwmark ${hex(ports.mark)} lookup ${ports.routeTable} pref ${EGRESS_RULE_PREF}`,
    "",
  ]
    .filter((l, i, all) => l !== "" || i === all.length - 1)
    .join("\n");
}

/** Whether `ip rule show` output holds the fwmark rule of these ports. */
export function hasAnyIpRule(ipRuleShow: string, ports: EgressPorts): boolean {
  return ipRuleShow
    .split("\n")
    .some((l) => l.includes(`fwmark ${hex(ports.mark)}`) && l.includes(`lookup ${ports.routeTable}`));
}
