import { describe, expect, it } from "vitest";
import { parseEgressPolicy } from "../../lib/egress-policy.js";
import { parseIpv4 } from "../config.js";
import type { Exec } from "../exec.js";
import { noopLogger } from "../logger.js";
import { hostTableName, slotAddresses, slotCapacity, slotIndexOfName } from "./addresses.js";
import {
  allowResolvedCommands,
  anyIpBatch,
  BLOCKED_RANGES,
  DEFAULT_EGRESS_PORTS,
  hasAnyIpRule,
  hostBatch,
  hostRules,
  ipv4Elements,
  isBlockedAddress,
  netnsBatch,
  policyCommands,
  slotRules,
} from "./rules.js";
import { type Slot, SlotIndexAllocator, SlotManager } from "./slots.js";

const cidr = { base: parseIpv4("10.240.0.0") ?? 0, prefixLength: 16 };

describe("slot addresses", () => {
  it("gives each slot its own /30 with short names", () => {
    expect(slotCapacity(cidr)).toBe(16_384);
    expect(slotAddresses("wr", cidr, 0)).toEqual({
      index: 0,
      netns: "wr-0",
      hostVeth: "wr-0h",
      hostIp: "10.240.0.1",
      slotIp: "10.240.0.2",
    });
    const last = slotAddresses("abcdef", cidr, 16_383);
    expect(last.slotIp).toBe("10.240.255.254");
    expect(last.hostVeth.length).toBeLessThanOrEqual(15);
    expect(() => slotAddresses("wr", cidr, 16_384)).toThrow(RangeError);
  });

  it("recognises only this agent's names", () => {
    expect(slotIndexOfName("wr", "wr-12")).toBe(12);
    expect(slotIndexOfName("wr", "wr-12h")).toBe(12);
    expect(slotIndexOfName("wr", "wr1-12")).toBeUndefined();
    expect(slotIndexOfName("w", "wr-12")).toBeUndefined();
    expect(slotIndexOfName("wr", "eth0")).toBeUndefined();
    expect(hostTableName("t1abc")).toBe("wrenn_t1abc");
  });
});

describe("slot index allocator", () => {
  it("takes the lowest free index, reuses freed ones and runs out", () => {
    const a = new SlotIndexAllocator(3);
    expect([a.take(), a.take()]).toEqual([0, 1]);
    a.free(0);
    expect(a.take()).toBe(0);
    a.reserve(2);
    expect(a.take()).toBeUndefined();
    expect(a.inUse).toBe(3);
    expect(() => a.reserve(3)).toThrow(RangeError);
  });
});

describe("generated network commands", () => {
  const slot = slotAddresses("wr", cidr, 5);

  it("creates the netns and veth in one root batch", () => {
    expect(hostBatch(slot).trim().split("\n")).toEqual([
      "netns add wr-5",
      "link add wr-5h type veth peer name eth0 netns wr-5",
      "addr add 10.240.0.21/30 dev wr-5h",
      "link set wr-5h up",
    ]);
  });

  it("adds a TAP for VMs and the guest address on loopback for namespaces", () => {
    expect(netnsBatch(slot, "vm")).toContain("tuntap add dev tap0 mode tap");
    expect(netnsBatch(slot, "vm")).toContain("addr add 169.254.0.22/30 dev tap0");
    expect(netnsBatch(slot, "namespace")).toContain("addr add 169.254.0.21/32 dev lo");
    expect(netnsBatch(slot, "namespace")).not.toContain("tap0");
  });

  it("DNATs the slot address to the guest and drops private ranges before any egress rule", () => {
    const rules = slotRules(slot, { kind: "vm", egress: true });
    expect(rules).toContain('iifname "eth0" ip daddr 10.240.0.22 dnat ip to 169.254.0.21');
    expect(rules).toContain('oifname "eth0" ip saddr 169.254.0.20/30 snat ip to 10.240.0.22');
    for (const range of ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"]) {
      expect(BLOCKED_RANGES).toContain(range);
    }
    const lines = rules.split("\n");
    const drop = lines.findIndex((l) => l.includes('iifname "tap0" ip daddr @blocked'));
    const accept = lines.findIndex((l) => l.includes('iifname "tap0" oifname "eth0" meta nfproto ipv4 jump egress'));
    expect(drop).toBeGreaterThan(0);
    expect(accept).toBeGreaterThan(drop);
    expect(rules).toMatch(/chain forward \{\n\s+type filter hook forward priority filter; policy drop;/);
  });

  it("has no egress accept at all when egress is off: it only remembers the attempt for the connection log", () => {
    const egressChain = (rules: string) => /chain egress \{\n([\s\S]*?)\n {2}\}/.exec(rules)?.[1]?.trim();
    const remember = "meta l4proto { tcp, udp } add @denied_flows { ip daddr . meta l4proto . th dport }";
    expect(egressChain(slotRules(slot, { kind: "vm", egress: false }))).toBe(remember);
    expect(egressChain(slotRules(slot, { kind: "namespace", egress: false }))).toBe(remember);
    expect(egressChain(slotRules(slot, { kind: "namespace", egress: true }))).toBe("accept");
    expect(slotRules(slot, { kind: "namespace", egress: true })).toContain(
      'oifname "eth0" meta nfproto ipv4 jump egress',
    );
  });

  it("drops forged source addresses and all IPv6 from the guest, before conntrack, egress on or off", () => {
    for (const egress of [true, false]) {
      const vm = slotRules(slot, { kind: "vm", egress });
      // A VM's packets enter on the TAP: only the guest address may be their source.
      expect(vm).toMatch(
        /chain antispoof_guest \{\n\s+type filter hook prerouting priority raw; policy accept;\n\s+iifname "tap0" ip saddr != 169\.254\.0\.21 counter name spoofed_dropped drop\n\s+iifname "tap0" meta nfproto ipv6 counter name spoofed_dropped drop\n\s+\}/,
      );
      // Anything the netns itself sends out of the veth carries the slot or the guest address.
      for (const rules of [vm, slotRules(slot, { kind: "namespace", egress })]) {
        expect(rules).toMatch(
          /chain antispoof_local \{\n\s+type filter hook output priority raw; policy accept;\n\s+oifname "eth0" ip saddr != \{ 10\.240\.0\.22, 169\.254\.0\.21 \} counter name spoofed_dropped drop\n\s+oifname "eth0" meta nfproto ipv6 counter name spoofed_dropped drop\n\s+\}/,
        );
        expect(rules).toContain("counter spoofed_dropped {}");
        // The anti-spoofing chains come before every accepting chain in the table (and hook earlier: raw).
        expect(rules.indexOf("chain antispoof_local")).toBeLessThan(rules.indexOf("chain prerouting"));
        // IPv4 is the only family any accept rule lets out of the slot.
        expect(rules).not.toMatch(/nfproto ipv6 accept|meta nfproto \{/);
      }
    }
    // A namespace slot has no TAP, so no rule names one.
    expect(slotRules(slot, { kind: "namespace", egress: true })).not.toContain("tap0");
  });

  it("guards the host and masquerades only with egress", () => {
    const off = hostRules("wr", cidr, false);
    expect(off).toContain('iifname "wr-*" ct state established,related accept');
    expect(off).toContain('iifname "wr-*" drop');
    expect(off).toContain('iifname "wr-*" oifname "wr-*" drop');
    expect(off).not.toContain("masquerade");
    expect(off.startsWith("table inet wrenn_wr {}\ndelete table inet wrenn_wr\n")).toBe(true);
    const on = hostRules("wr", cidr, true);
    expect(on).toContain('ip saddr 10.240.0.0/16 oifname != "wr-*" masquerade');
  });
});

describe("egress policy rules (issue 20)", () => {
  const slot = slotAddresses("wr", cidr, 1);
  const ports = DEFAULT_EGRESS_PORTS;
  const lines = (text: string) => text.trimEnd().split("\n");

  it("makes every slot with empty policy sets and chains, and accepts the resolver only after a DNAT", () => {
    for (const kind of ["vm", "namespace"] as const) {
      const rules = slotRules(slot, { kind, egress: true });
      expect(rules).toContain("set allow_net { type ipv4_addr; flags interval; }");
      expect(rules).toContain("set deny_net { type ipv4_addr; flags interval; }");
      expect(rules).toContain("set dns_ok { type ipv4_addr; flags timeout; }");
      expect(rules).toContain("counter policy_dropped {}");
      expect(rules).toMatch(/chain policy_nat \{\n\s+\}/);
      // The resolver (on the host end, which is in the blocked slot range) is accepted before the
      // private-range drop, but only for a connection the slot's own DNAT redirected.
      const all = lines(rules);
      const resolver = all.findIndex((l) =>
        l.includes("ct status dnat ip daddr 10.240.0.5 meta l4proto { tcp, udp } th dport 15353 accept"),
      );
      const drop = all.findIndex((l) => l.includes("ip daddr @blocked counter name private_dropped drop"));
      expect(resolver).toBeGreaterThan(0);
      expect(drop).toBeGreaterThan(resolver);
    }
    // The redirections hook where the guest's packets pass: prerouting from a VM's TAP, nat output for
    // a namespace guest's own sockets.
    expect(slotRules(slot, { kind: "vm", egress: true })).toContain('iifname "tap0" jump policy_nat');
    expect(slotRules(slot, { kind: "namespace", egress: true })).toMatch(
      /chain nat_output \{\n\s+type nat hook output priority -100; policy accept;\n\s+oifname "eth0" jump policy_nat\n\s+\}/,
    );
    expect(slotRules(slot, { kind: "namespace", egress: true, ports: { ...ports, dnsPort: 5353 } })).toContain(
      "th dport 5353 accept",
    );
  });

  it("keeps only the outermost of nested CIDRs (interval sets refuse overlaps), IPv4 only", () => {
    const parsed = parseEgressPolicy({
      allowOut: ["5.6.0.0/16", "5.0.0.0/8", "5.6.7.8", "1.2.3.4", "1.2.3.4/32", "2001:db8::/32", "a.test"],
      denyOut: [],
    });
    expect(ipv4Elements(parsed.allow)).toEqual(["1.2.3.4", "5.0.0.0/8"]);
    expect(ipv4Elements(parseEgressPolicy({ allowOut: ["0.0.0.0/0", "8.8.8.8"], denyOut: [] }).allow)).toEqual([
      "0.0.0.0/0",
    ]);
  });

  it("replaces a policy in one transaction: flush, sets, redirections, then the verdict chain", () => {
    const parsed = parseEgressPolicy({ allowOut: ["192.88.99.7", "*.example.test"], denyOut: ["0.0.0.0/0"] });
    const text = policyCommands(slot, parsed, { internetAccess: true, inspect: true, ports });
    expect(lines(text)).toEqual([
      "flush chain inet wrenn policy_nat",
      "flush chain inet wrenn egress",
      "flush set inet wrenn allow_net",
      "flush set inet wrenn deny_net",
      "flush set inet wrenn dns_ok",
      "add element inet wrenn allow_net { 192.88.99.7 }",
      "add element inet wrenn deny_net { 0.0.0.0/0 }",
      "add rule inet wrenn policy_nat meta l4proto { tcp, udp } th dport 53 dnat ip to 10.240.0.5:15353",
      "add rule inet wrenn policy_nat tcp dport 80 ip daddr != @allow_net ip daddr != @blocked dnat ip to ip daddr:15080",
      "add rule inet wrenn policy_nat tcp dport 443 ip daddr != @allow_net ip daddr != @blocked dnat ip to ip daddr:15443",
      "add rule inet wrenn egress ct status dnat tcp dport { 15080, 15443 } accept",
      "add set inet wrenn denied_flows { type ipv4_addr . inet_proto . inet_service; flags dynamic, timeout; size 1024; timeout 60s; }",
      "add rule inet wrenn egress ip daddr @allow_net accept",
      "add rule inet wrenn egress ip daddr @dns_ok accept",
      "add rule inet wrenn egress ip daddr @deny_net meta l4proto { tcp, udp } add @denied_flows { ip daddr . meta l4proto . th dport }",
      "add rule inet wrenn egress ip daddr @deny_net counter name policy_dropped drop",
      "add rule inet wrenn egress accept",
    ]);
  });

  it("keeps the resolved addresses only when asked (restart recovery)", () => {
    const parsed = parseEgressPolicy({ allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] });
    expect(policyCommands(slot, parsed, { internetAccess: true, inspect: true, ports })).toContain(
      "flush set inet wrenn dns_ok",
    );
    const kept = policyCommands(slot, parsed, { internetAccess: true, inspect: true, ports, keepResolved: true });
    expect(kept).not.toContain("dns_ok\n");
    expect(kept).toContain("flush set inet wrenn allow_net");
  });

  it("without inspection redirects nothing; with the internet off the default is a counted drop", () => {
    const parsed = parseEgressPolicy({ allowOut: ["192.88.99.0/24"], denyOut: [] });
    const text = policyCommands(slot, parsed, { internetAccess: false, inspect: false, ports });
    expect(text).not.toContain("policy_nat ");
    expect(text).not.toContain("dnat");
    expect(lines(text).at(-1)).toBe("add rule inet wrenn egress counter name policy_dropped drop");
    expect(lines(text)).not.toContain("add rule inet wrenn egress accept");
    // Every dropped TCP/UDP attempt is remembered for the connection log before the drop.
    expect(lines(text).at(-2)).toBe(
      "add rule inet wrenn egress meta l4proto { tcp, udp } add @denied_flows { ip daddr . meta l4proto . th dport }",
    );
  });

  it("an empty policy flushes back to the slot as made: the internet switch alone", () => {
    const empty = parseEgressPolicy({ allowOut: [], denyOut: [] });
    const on = lines(policyCommands(slot, empty, { internetAccess: true, inspect: true, ports }));
    expect(on.filter((l) => !l.startsWith("flush "))).toEqual(["add rule inet wrenn egress accept"]);
    const off = lines(policyCommands(slot, empty, { internetAccess: false, inspect: true, ports }));
    expect(off.filter((l) => !l.startsWith("flush "))).toEqual([
      "add rule inet wrenn egress meta l4proto { tcp, udp } add @denied_flows { ip daddr . meta l4proto . th dport }",
    ]);
  });

  it("adds resolved addresses with a clamped TTL and never a blocked one", () => {
    expect(isBlockedAddress("10.1.2.3")).toBe(true);
    expect(isBlockedAddress("169.254.169.254")).toBe(true);
    expect(isBlockedAddress("127.0.0.1")).toBe(true);
    expect(isBlockedAddress("2001:db8::1")).toBe(true);
    expect(isBlockedAddress("192.88.99.7")).toBe(false);
    expect(lines(allowResolvedCommands(["192.88.99.7", "192.88.99.7", "192.168.1.1", "8.8.8.8"], 86_400))).toEqual([
      "add element inet wrenn dns_ok { 192.88.99.7, 8.8.8.8 }",
      "delete element inet wrenn dns_ok { 192.88.99.7, 8.8.8.8 }",
      "add element inet wrenn dns_ok { 192.88.99.7 timeout 3600s, 8.8.8.8 timeout 3600s }",
    ]);
    expect(allowResolvedCommands(["192.88.99.7"], 0)).toContain("timeout 5s");
    expect(allowResolvedCommands(["10.0.0.1", "::1"], 60)).toBe("");
  });

  it("marks slots' proxy-port packets in the root netns and accepts only them and the resolver", () => {
    const rules = hostRules("wr", cidr, false, { ...ports, mark: 0x1234 });
    expect(rules).toContain("type filter hook prerouting priority mangle; policy accept;");
    expect(rules).toContain('iifname "wr-*" tcp dport { 15080, 15443 } meta mark set 0x1234');
    const all = lines(rules);
    const start = all.indexOf("  chain input {");
    const input = all.slice(start + 1, all.indexOf("  }", start)).map((l) => l.trim());
    expect(input).toEqual([
      "type filter hook input priority filter - 10; policy accept;",
      'iifname "wr-*" ct state established,related accept',
      'iifname "wr-*" ip daddr 10.240.0.0/16 meta l4proto { tcp, udp } th dport 15353 accept',
      'iifname "wr-*" meta mark 0x1234 tcp dport { 15080, 15443 } accept',
      'iifname "wr-*" drop',
    ]);
    // Never forwarded, whatever the routing says.
    expect(rules).toContain('iifname "wr-*" meta mark 0x1234 drop');
  });

  it("routes marked packets to a local route (AnyIP), adding the rule only once", () => {
    expect(anyIpBatch(ports, false)).toBe(
      "route replace local 0.0.0.0/0 dev lo table 5780\nrule add fwmark 0x57e0 lookup 5780 pref 1000\n",
    );
    expect(anyIpBatch(ports, true)).toBe("route replace local 0.0.0.0/0 dev lo table 5780\n");
    const shown =
      "0:\tfrom all lookup local\n1000:\tfrom all fwmark 0x57e0 lookup 5780\n32766:\tfrom all lookup main\n";
    expect(hasAnyIpRule(shown, ports)).toBe(true);
    expect(hasAnyIpRule(shown, { ...ports, routeTable: 5781 })).toBe(false);
  });
});

describe("SlotManager.applyPolicy (issue 20)", () => {
  function manager(egress: boolean, inspect: "policy" | "always" = "policy") {
    const inputs: string[] = [];
    const exec: Exec = async (file, args, options) => {
      inputs.push([file, ...args, typeof options?.input === "string" ? options.input : ""].join(" "));
      return { exitCode: 0, stdout: "", stderr: "" };
    };
    return { slots: new SlotManager({ exec, logger: noopLogger, prefix: "wr", cidr, egress, inspect }), inputs };
  }
  const slot = (slots: SlotManager): Slot => slots.describe(2, "namespace", true);
  const addressOnly = parseEgressPolicy({ allowOut: ["192.88.99.7"], denyOut: ["0.0.0.0/0"] });
  const withNames = parseEgressPolicy({ allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] });

  it("runs one nft transaction in the slot's netns and records the effective switch", async () => {
    const { slots, inputs } = manager(true);
    const s = slot(slots);
    await slots.applyPolicy(s, withNames, false);
    expect(inputs).toHaveLength(1);
    expect(inputs[0]?.startsWith("ip netns exec wr-2 nft -f - flush chain inet wrenn policy_nat\n")).toBe(true);
    expect(inputs[0]).toContain("dnat ip to 10.240.0.9:15353");
    expect(s).toMatchObject({ egress: false, policed: true });
  });

  it("redirects to the resolver and proxy for domain rules, or always when told; never with the agent's egress off", async () => {
    const policyMode = manager(true);
    await policyMode.slots.applyPolicy(slot(policyMode.slots), addressOnly, true);
    expect(policyMode.inputs[0]).not.toContain("dnat");
    const always = manager(true, "always");
    await always.slots.applyPolicy(slot(always.slots), addressOnly, true);
    expect(always.inputs[0]).toContain("dnat ip to ip daddr:15443");
    const off = manager(false, "always");
    const s = slot(off.slots);
    await off.slots.applyPolicy(s, withNames, true);
    expect(off.inputs[0]).not.toContain("dnat");
    expect(s.egress).toBe(false);
    expect(off.inputs[0]?.trimEnd().endsWith("add rule inet wrenn egress counter name policy_dropped drop")).toBe(true);
  });
});
