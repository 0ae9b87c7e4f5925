import { describe, expect, it } from "vitest";
import { parseIpv4 } from "../config.js";
import { hostTableName, slotAddresses, slotCapacity, slotIndexOfName } from "./addresses.js";
import { BLOCKED_RANGES, hostBatch, hostRules, netnsBatch, slotRules } from "./rules.js";
import { SlotIndexAllocator } from "./slots.js";

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

  it("has no egress accept at all when egress is off", () => {
    const egressChain = (rules: string) => /chain egress \{\n([^}]*)\}/.exec(rules)?.[1]?.trim();
    expect(egressChain(slotRules(slot, { kind: "vm", egress: false }))).toBe("");
    expect(egressChain(slotRules(slot, { kind: "namespace", egress: false }))).toBe("");
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
