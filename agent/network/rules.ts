import { formatIpv4, type Ipv4Network } from "../config.js";
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

export interface SlotRuleOptions {
  kind: SlotKind;
  /** Whether this sandbox may reach the internet (the agent's egress switch and the sandbox's own flag). */
  egress: boolean;
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
 * The firewall inside a slot's netns. The host reaches the guest at the slot address (DNAT to the guest);
 * the guest may answer, and may open connections only to public addresses and only when egress is on,
 * and only from its own address (anti-spoofing, above). Drops of private-range traffic are counted in
 * `private_dropped` and of forged sources in `spoofed_dropped`, so tests can see which rule acted.
 */
export function slotRules(slot: SlotAddresses, opts: SlotRuleOptions): string {
  const blocked = `{ ${BLOCKED_RANGES.join(", ")} }`;
  const vm = opts.kind === "vm";
  const lines = [
    "table inet wrenn {",
    `  set blocked { type ipv4_addr; flags interval; elements = ${blocked} }`,
    "  counter private_dropped {}",
    "  counter spoofed_dropped {}",
    ...antiSpoofChains(slot, vm),
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
    `    iifname "${SLOT_IFACE}" ip daddr ${slot.slotIp} dnat ip to ${GUEST_IP}`,
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
    "    ct state established,related accept",
    vm ? `    iifname "${SLOT_IFACE}" oifname "${TAP_NAME}" ip daddr ${GUEST_IP} ct status dnat accept` : "",
    vm ? `    iifname "${TAP_NAME}" ip daddr @blocked counter name private_dropped drop` : "",
    vm && opts.egress ? `    iifname "${TAP_NAME}" oifname "${SLOT_IFACE}" meta nfproto ipv4 accept` : "",
    "  }",
    "  chain output {",
    "    type filter hook output priority filter; policy drop;",
    '    oifname "lo" accept',
    "    ct state established,related accept",
    vm ? `    oifname "${TAP_NAME}" accept` : "",
    `    oifname "${SLOT_IFACE}" ip daddr @blocked counter name private_dropped drop`,
    !vm && opts.egress ? `    oifname "${SLOT_IFACE}" meta nfproto ipv4 accept` : "",
    "  }",
    "}",
  ];
  return `${lines.filter((l) => l !== "").join("\n")}\n`;
}

/**
 * The agent's table in the root netns, matching every slot by interface-name prefix: slots may not
 * open connections to the host (its services, the agent's port) nor, through the host's forwarding,
 * to each other or to private ranges; egress is forwarded and masqueraded only when enabled.
 * Recreated atomically (add, delete, add) so a restart never leaves a gap or a duplicate.
 */
export function hostRules(prefix: string, cidr: Ipv4Network, egress: boolean): string {
  const table = hostTableName(prefix);
  const ifaces = `"${prefix}-*"`;
  const range = `${formatIpv4(cidr.base)}/${cidr.prefixLength}`;
  const lines = [
    `table inet ${table} {}`,
    `delete table inet ${table}`,
    `table inet ${table} {`,
    `  set blocked { type ipv4_addr; flags interval; elements = { ${BLOCKED_RANGES.join(", ")} } }`,
    "  chain input {",
    "    type filter hook input priority filter - 10; policy accept;",
    `    iifname ${ifaces} ct state established,related accept`,
    `    iifname ${ifaces} drop`,
    "  }",
    "  chain forward {",
    "    type filter hook forward priority filter - 10; policy accept;",
    `    iifname ${ifaces} oifname ${ifaces} drop`,
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
