import { formatIpv4, type Ipv4Network } from "../config.js";

/**
 * Names and addresses of network slots. Each slot owns one /30 of the agent's slot range: the host
 * end of its veth takes .1 and the netns end (the slot address the host reaches the guest at) takes
 * .2. Names carry the agent's prefix and a dash, so one agent's cleanup never touches another's.
 */

/** Address of the guest inside every slot (VM eth0, or the namespace sandbox's service address). */
export const GUEST_IP = "169.254.0.21";
/** The TAP's address inside the netns: the guest's gateway. */
export const GATEWAY_IP = "169.254.0.22";
/** The guest link: 169.254.0.20/30. */
export const GUEST_LINK = "169.254.0.20/30";
export const GUEST_PREFIX_LENGTH = 30;
export const GUEST_MAC = "02:fc:00:00:00:05";
export const TAP_NAME = "tap0";
/** Name of the slot's veth end inside its netns. */
export const SLOT_IFACE = "eth0";

export interface SlotAddresses {
  index: number;
  netns: string;
  hostVeth: string;
  /** Host end of the veth. */
  hostIp: string;
  /** Netns end of the veth: where the host reaches the guest (DNAT to GUEST_IP). */
  slotIp: string;
}

/** How many slots fit in the range (one /30 each). */
export function slotCapacity(cidr: Ipv4Network): number {
  return 2 ** (32 - cidr.prefixLength) / 4;
}

export function slotAddresses(prefix: string, cidr: Ipv4Network, index: number): SlotAddresses {
  if (!Number.isInteger(index) || index < 0 || index >= slotCapacity(cidr)) {
    throw new RangeError(`slot ${index} is outside the slot range (0..${slotCapacity(cidr) - 1})`);
  }
  const base = cidr.base + index * 4;
  return {
    index,
    netns: `${prefix}-${index}`,
    hostVeth: `${prefix}-${index}h`,
    hostIp: formatIpv4(base + 1),
    slotIp: formatIpv4(base + 2),
  };
}

/** The slot index a netns or host veth name of this agent refers to, or undefined if it is not ours. */
export function slotIndexOfName(prefix: string, name: string): number | undefined {
  const match = new RegExp(`^${prefix}-([0-9]+)h?$`).exec(name);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

/** Name of the host-side firewall table for this agent. */
export function hostTableName(prefix: string): string {
  return `wrenn_${prefix}`;
}
