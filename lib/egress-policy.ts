/**
 * A sandbox's egress policy: what its code may connect to. One pure module shared by the edge (to
 * validate and store it), the agent (to turn it into firewall sets, and to judge DNS questions and
 * inspected connections) and the tests. No I/O and no node:* imports: it runs on Workers too.
 *
 * Precedence, as in E2B: a destination that matches `allowOut` is allowed even when `denyOut` also
 * matches (`denyOut: ["0.0.0.0/0"]` plus an allow list is "only these"); else a `denyOut` match denies;
 * else the sandbox's internet switch decides. The platform's own blocks (private ranges, the agent,
 * other sandboxes, the metadata address) come before all of it and no rule opens them.
 */

/** E2B's "all traffic" sentinel. */
export const ALL_TRAFFIC = "0.0.0.0/0";

/** Most entries a list may hold: each becomes a set element or a name pattern the resolver checks. */
export const MAX_EGRESS_ENTRIES = 512;

export interface EgressPolicy {
  /** Destinations always allowed: IPv4/IPv6 addresses, CIDRs, domains, `*.domain` wildcards. */
  allowOut: string[];
  /** Destinations denied unless allowed: the same forms. */
  denyOut: string[];
}

export type EgressRule =
  | { kind: "ipv4"; text: string; base: number; prefixLength: number }
  | { kind: "ipv6"; text: string; base: bigint; prefixLength: number }
  | { kind: "domain"; text: string; name: string }
  | { kind: "wildcard"; text: string; suffix: string };

export interface ParsedEgressPolicy {
  allow: EgressRule[];
  deny: EgressRule[];
}

export class EgressPolicyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EgressPolicyError";
  }
}

const ipv4Pattern = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const labelPattern = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** Parses a dotted IPv4 address to an unsigned 32-bit number, or undefined. */
export function parseIpv4(text: string): number | undefined {
  const m = ipv4Pattern.exec(text);
  if (!m) return undefined;
  let value = 0;
  for (const octet of m.slice(1)) {
    const n = Number(octet);
    if (n > 255 || (octet.length > 1 && octet.startsWith("0"))) return undefined;
    value = value * 256 + n;
  }
  return value;
}

export function formatIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => (value >>> shift) & 0xff).join(".");
}

/** Parses an IPv6 address (with `::` and an optional trailing dotted IPv4) to a 128-bit bigint. */
export function parseIpv6(text: string): bigint | undefined {
  if (!text.includes(":") || text.length > 45) return undefined;
  let head = text;
  let tailV4: number | undefined;
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    tailV4 = parseIpv4(text.slice(lastColon + 1));
    if (tailV4 === undefined) return undefined;
    head = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const halves = head.split("::");
  if (halves.length > 2) return undefined;
  const parse = (part: string) => (part === "" ? [] : part.split(":"));
  const left = parse(halves[0] ?? "");
  const right = halves.length === 2 ? parse(halves[1] ?? "") : [];
  const missing = 8 - left.length - right.length;
  if ((halves.length === 1 && missing !== 0) || (halves.length === 2 && missing < 1)) return undefined;
  const groups = [...left, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...right];
  let value = 0n;
  for (const group of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(group)) return undefined;
    value = (value << 16n) | BigInt(Number.parseInt(group, 16));
  }
  if (tailV4 !== undefined) value = (value & ~0xffffffffn) | BigInt(tailV4);
  return value;
}

function normaliseName(text: string): string | undefined {
  const name = text.toLowerCase().replace(/\.$/, "");
  if (name.length === 0 || name.length > 253) return undefined;
  const labels = name.split(".");
  if (labels.length < 1 || !labels.every((l) => labelPattern.test(l))) return undefined;
  // A name that is all digits and dots is a malformed address, not a domain.
  if (/^[0-9.]+$/.test(name)) return undefined;
  return name;
}

/** Parses one allowOut/denyOut entry, or throws EgressPolicyError with a message naming it. */
export function parseEgressRule(entry: string): EgressRule {
  const text = entry.trim();
  const [addr, prefix, extra] = text.split("/");
  if (extra === undefined && addr !== undefined && addr !== "") {
    const v4 = parseIpv4(addr);
    if (v4 !== undefined) {
      const prefixLength = prefix === undefined ? 32 : /^\d{1,2}$/.test(prefix) ? Number(prefix) : Number.NaN;
      if (!(prefixLength >= 0 && prefixLength <= 32)) {
        throw new EgressPolicyError(`"${entry}": an IPv4 prefix length is 0 to 32`);
      }
      const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
      return {
        kind: "ipv4",
        text: `${formatIpv4((v4 & mask) >>> 0)}/${prefixLength}`,
        base: (v4 & mask) >>> 0,
        prefixLength,
      };
    }
    const v6 = parseIpv6(addr);
    if (v6 !== undefined) {
      const prefixLength = prefix === undefined ? 128 : /^\d{1,3}$/.test(prefix) ? Number(prefix) : Number.NaN;
      if (!(prefixLength >= 0 && prefixLength <= 128)) {
        throw new EgressPolicyError(`"${entry}": an IPv6 prefix length is 0 to 128`);
      }
      const shift = BigInt(128 - prefixLength);
      const base = prefixLength === 0 ? 0n : (v6 >> shift) << shift;
      return { kind: "ipv6", text: `${addr.toLowerCase()}/${prefixLength}`, base, prefixLength };
    }
  }
  if (prefix === undefined && addr !== undefined) {
    if (addr.startsWith("*.")) {
      const suffix = normaliseName(addr.slice(2));
      if (suffix) return { kind: "wildcard", text: `*.${suffix}`, suffix };
    } else {
      const name = normaliseName(addr);
      if (name) return { kind: "domain", text: name, name };
    }
  }
  throw new EgressPolicyError(`"${entry}" is not an IPv4/IPv6 address, a CIDR, a domain or a *.domain wildcard`);
}

/** Validates and parses a whole policy; the error names the list and the entry. */
export function parseEgressPolicy(policy: EgressPolicy): ParsedEgressPolicy {
  const parseList = (name: string, list: string[]) => {
    if (list.length > MAX_EGRESS_ENTRIES) {
      throw new EgressPolicyError(`${name} has ${list.length} entries; at most ${MAX_EGRESS_ENTRIES}`);
    }
    return list.map((entry) => {
      try {
        return parseEgressRule(entry);
      } catch (err) {
        throw new EgressPolicyError(`${name}: ${(err as Error).message}`);
      }
    });
  };
  return { allow: parseList("allowOut", policy.allowOut), deny: parseList("denyOut", policy.denyOut) };
}

/** Whether a policy restricts or inspects anything (an empty one behaves as if there were none). */
export function isEmptyPolicy(policy: EgressPolicy): boolean {
  return policy.allowOut.length === 0 && policy.denyOut.length === 0;
}

/** Whether any rule names a domain: then DNS and ports 80/443 go through the agent's resolver and proxy. */
export function hasDomainRules(policy: ParsedEgressPolicy): boolean {
  return [...policy.allow, ...policy.deny].some((r) => r.kind === "domain" || r.kind === "wildcard");
}

/** Whether a DNS name matches a domain rule: exact, or a wildcard's strict subdomain (any depth). */
export function nameMatches(rule: EgressRule, name: string): boolean {
  const n = name.toLowerCase().replace(/\.$/, "");
  if (rule.kind === "domain") return n === rule.name;
  if (rule.kind === "wildcard") return n.endsWith(`.${rule.suffix}`);
  return false;
}

/** Whether an address (dotted IPv4 or IPv6 text) falls in an address rule. */
export function addressMatches(rule: EgressRule, address: string): boolean {
  if (rule.kind === "ipv4") {
    const v = parseIpv4(address);
    if (v === undefined) return false;
    const mask = rule.prefixLength === 0 ? 0 : (0xffffffff << (32 - rule.prefixLength)) >>> 0;
    return (v & mask) >>> 0 === rule.base;
  }
  if (rule.kind === "ipv6") {
    const v = parseIpv6(address);
    if (v === undefined) return false;
    const shift = BigInt(128 - rule.prefixLength);
    return rule.prefixLength === 0 || (v >> shift) << shift === rule.base;
  }
  return false;
}

export type EgressVerdict =
  | { allowed: true; rule: string; list: "allowOut" | "default" }
  | { allowed: false; rule: string; list: "denyOut" | "internet-off" | "platform" | "no-name" };

export interface EgressDestination {
  /** Destination address, when known (a DNS question has none). */
  address?: string;
  /** The name the connection asked for: the DNS question, the TLS SNI, or the HTTP Host. */
  name?: string;
}

/**
 * Judges one destination against a policy (the platform's blocks are the caller's: they come first and
 * are the same for every sandbox). An address rule matches the address, a domain rule the name.
 */
export function judgeEgress(
  policy: ParsedEgressPolicy,
  internetAccess: boolean,
  dest: EgressDestination,
): EgressVerdict {
  const matches = (rule: EgressRule) =>
    rule.kind === "domain" || rule.kind === "wildcard"
      ? dest.name !== undefined && nameMatches(rule, dest.name)
      : dest.address !== undefined && addressMatches(rule, dest.address);
  const allowed = policy.allow.find(matches);
  if (allowed) return { allowed: true, rule: allowed.text, list: "allowOut" };
  const denied = policy.deny.find(matches);
  if (denied) return { allowed: false, rule: denied.text, list: "denyOut" };
  // A DNS question has no address: an address-only deny list that covers everything (0.0.0.0/0) denies
  // every name that no allow rule names, so "deny all + allow these names" resolves only those names.
  if (dest.address === undefined && policy.deny.some((r) => r.kind === "ipv4" && r.prefixLength === 0)) {
    return { allowed: false, rule: ALL_TRAFFIC, list: "denyOut" };
  }
  if (!internetAccess) return { allowed: false, rule: "allowInternetAccess=false", list: "internet-off" };
  return { allowed: true, rule: "default", list: "default" };
}
