import { networkInterfaces } from "node:os";
import { addressMatches, type ParsedEgressPolicy, parseEgressRule } from "../../lib/egress-policy.js";
import { BLOCKED_RANGES } from "../network/rules.js";

/**
 * What the resolver and the proxy need from the sandbox manager's egress registry
 * (agent/network/egress-registry.ts implements it): which sandbox a slot address belongs to, and the
 * kernel's "addresses resolved for an allowed name" set.
 */
export interface EgressLookup {
  /** The sandbox whose slot has this address (a connection's or datagram's source), if any. */
  bySlotIp(ip: string): { sandboxId: string; policy: ParsedEgressPolicy; internetAccess: boolean } | undefined;
  /** Opens these IPv4 addresses to the sandbox for `ttlSec` (the kernel clamps it); resolves once in place. */
  allowResolved(sandboxId: string, addresses: readonly string[], ttlSec: number): Promise<void>;
}

const blockedRules = BLOCKED_RANGES.map((range) => parseEgressRule(range));

/**
 * The platform's block on a destination address, before any policy: the private, loopback, link-local,
 * metadata and multicast ranges, every address of this host (the proxy connects from the host itself,
 * so the host's public address would reach its own services), and anything that is not IPv4 (slots have
 * no IPv6). Returns the range that blocks it, or undefined.
 */
export function platformBlock(address: string, localAddresses: ReadonlySet<string>): string | undefined {
  const ip = address.startsWith("::ffff:") ? address.slice(7) : address;
  if (!/^[0-9]{1,3}(\.[0-9]{1,3}){3}$/.test(ip)) return "ipv6";
  const rule = blockedRules.find((r) => addressMatches(r, ip));
  if (rule) return rule.text;
  if (localAddresses.has(ip)) return "host";
  return undefined;
}

/** The host's own IPv4 addresses, re-read at most every `maxAgeMs` (interfaces come and go). */
export function hostAddresses(maxAgeMs = 5000): () => ReadonlySet<string> {
  let cached: Set<string> | undefined;
  let at = 0;
  return () => {
    const now = Date.now();
    if (!cached || now - at > maxAgeMs) {
      cached = new Set(
        Object.values(networkInterfaces())
          .flatMap((list) => list ?? [])
          .filter((i) => i.family === "IPv4")
          .map((i) => i.address),
      );
      at = now;
    }
    return cached;
  };
}
