import { describe, expect, it } from "vitest";
import {
  ALL_TRAFFIC,
  addressMatches,
  EgressPolicyError,
  formatIpv4,
  hasDomainRules,
  isEmptyPolicy,
  judgeEgress,
  MAX_EGRESS_ENTRIES,
  nameMatches,
  parseEgressPolicy,
  parseEgressRule,
  parseIpv4,
  parseIpv6,
} from "./egress-policy.js";

const policy = (allowOut: string[], denyOut: string[] = []) => parseEgressPolicy({ allowOut, denyOut });

describe("addresses", () => {
  it("parses and formats dotted IPv4, refusing leading zeros and out-of-range octets", () => {
    expect(parseIpv4("192.88.99.7")).toBe(0xc0586307);
    expect(formatIpv4(0xc0586307)).toBe("192.88.99.7");
    expect(parseIpv4("0.0.0.0")).toBe(0);
    expect(formatIpv4(0xffffffff)).toBe("255.255.255.255");
    for (const bad of ["256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", "a.b.c.d", " 1.2.3.4", ""]) {
      expect(parseIpv4(bad), bad).toBeUndefined();
    }
  });

  it("parses IPv6 with ::, full form and a trailing IPv4", () => {
    expect(parseIpv6("::")).toBe(0n);
    expect(parseIpv6("::1")).toBe(1n);
    expect(parseIpv6("2001:db8::1")).toBe((0x20010db8n << 96n) | 1n);
    expect(parseIpv6("2001:0db8:0000:0000:0000:0000:0000:0001")).toBe(parseIpv6("2001:db8::1"));
    expect(parseIpv6("::ffff:192.0.2.1")).toBe((0xffffn << 32n) | 0xc0000201n);
    for (const bad of ["1::2::3", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "12345::", "g::1", "1.2.3.4", "::ffff:1.2.3"]) {
      expect(parseIpv6(bad), bad).toBeUndefined();
    }
  });
});

describe("parseEgressRule", () => {
  it("normalises IPv4 addresses and CIDRs to their network", () => {
    expect(parseEgressRule("1.2.3.4")).toEqual({
      kind: "ipv4",
      text: "1.2.3.4/32",
      base: 0x01020304,
      prefixLength: 32,
    });
    expect(parseEgressRule("10.1.2.3/8")).toMatchObject({ text: "10.0.0.0/8", base: 0x0a000000, prefixLength: 8 });
    expect(parseEgressRule(ALL_TRAFFIC)).toMatchObject({ kind: "ipv4", base: 0, prefixLength: 0 });
    expect(parseEgressRule(" 8.8.8.8 ")).toMatchObject({ text: "8.8.8.8/32" });
  });

  it("parses IPv6, domains (lower-cased, trailing dot dropped) and *.domain wildcards", () => {
    expect(parseEgressRule("2001:DB8::/32")).toMatchObject({ kind: "ipv6", prefixLength: 32, text: "2001:db8::/32" });
    expect(parseEgressRule("::1")).toMatchObject({ kind: "ipv6", prefixLength: 128 });
    expect(parseEgressRule("API.OpenAI.com.")).toEqual({
      kind: "domain",
      text: "api.openai.com",
      name: "api.openai.com",
    });
    expect(parseEgressRule("*.Example.test")).toEqual({
      kind: "wildcard",
      text: "*.example.test",
      suffix: "example.test",
    });
    expect(parseEgressRule("localhost")).toMatchObject({ kind: "domain", name: "localhost" });
    expect(parseEgressRule("_srv.example.test")).toMatchObject({ kind: "domain" });
  });

  it("refuses anything else, naming the entry", () => {
    const bad = [
      "1.2.3.4/33",
      "1.2.3.4/-1",
      "1.2.3.4/x",
      "1.2.3.4/8/9",
      "::1/129",
      "999.1.1.1",
      "1.2.3",
      "",
      "*",
      "*.",
      "a.*.test",
      "**.test",
      "exa mple.test",
      "-bad.test",
      "bad-.test",
      "https://example.test",
      "example.test:443",
      `${"a".repeat(64)}.test`,
      "example.test/24",
    ];
    for (const entry of bad) {
      expect(() => parseEgressRule(entry), entry).toThrow(EgressPolicyError);
      expect(() => parseEgressRule(entry), entry).toThrow(`"${entry}"`);
    }
  });
});

describe("parseEgressPolicy", () => {
  it("parses both lists and names the list of a bad entry", () => {
    const parsed = policy(["1.2.3.4", "*.example.test"], [ALL_TRAFFIC]);
    expect(parsed.allow.map((r) => r.kind)).toEqual(["ipv4", "wildcard"]);
    expect(parsed.deny.map((r) => r.text)).toEqual(["0.0.0.0/0"]);
    expect(() => policy([], ["ok.test", "not ok"])).toThrow(/^denyOut: "not ok"/);
    expect(() => policy(["10.0.0.0/40"])).toThrow(/^allowOut: "10.0.0.0\/40": an IPv4 prefix length is 0 to 32/);
  });

  it("bounds the number of entries", () => {
    const many = Array.from({ length: MAX_EGRESS_ENTRIES + 1 }, (_, i) => `h${i}.example.test`);
    expect(() => policy(many)).toThrow(`allowOut has ${MAX_EGRESS_ENTRIES + 1} entries; at most ${MAX_EGRESS_ENTRIES}`);
    expect(policy(many.slice(1)).allow).toHaveLength(MAX_EGRESS_ENTRIES);
  });

  it("knows an empty policy and one with domain rules", () => {
    expect(isEmptyPolicy({ allowOut: [], denyOut: [] })).toBe(true);
    expect(isEmptyPolicy({ allowOut: [], denyOut: [ALL_TRAFFIC] })).toBe(false);
    expect(hasDomainRules(policy(["1.2.3.4"], [ALL_TRAFFIC]))).toBe(false);
    expect(hasDomainRules(policy(["1.2.3.4"], ["evil.test"]))).toBe(true);
    expect(hasDomainRules(policy(["*.example.test"]))).toBe(true);
  });
});

describe("matching", () => {
  it("a wildcard matches strict subdomains at any depth, not the bare domain nor look-alikes", () => {
    const wildcard = parseEgressRule("*.example.test");
    expect(nameMatches(wildcard, "a.example.test")).toBe(true);
    expect(nameMatches(wildcard, "a.b.example.test")).toBe(true);
    expect(nameMatches(wildcard, "A.EXAMPLE.TEST.")).toBe(true);
    expect(nameMatches(wildcard, "example.test")).toBe(false);
    expect(nameMatches(wildcard, "badexample.test")).toBe(false);
    expect(nameMatches(wildcard, "example.test.evil")).toBe(false);
    const domain = parseEgressRule("example.test");
    expect(nameMatches(domain, "Example.Test.")).toBe(true);
    expect(nameMatches(domain, "a.example.test")).toBe(false);
    // Address rules never match a name, domain rules never an address.
    expect(nameMatches(parseEgressRule("1.2.3.4"), "1.2.3.4")).toBe(false);
    expect(addressMatches(domain, "1.2.3.4")).toBe(false);
  });

  it("matches addresses in IPv4 and IPv6 CIDRs, never across families", () => {
    expect(addressMatches(parseEgressRule("192.88.99.0/24"), "192.88.99.200")).toBe(true);
    expect(addressMatches(parseEgressRule("192.88.99.0/24"), "192.88.98.200")).toBe(false);
    expect(addressMatches(parseEgressRule(ALL_TRAFFIC), "203.0.113.5")).toBe(true);
    expect(addressMatches(parseEgressRule("1.2.3.4"), "1.2.3.4")).toBe(true);
    expect(addressMatches(parseEgressRule("1.2.3.4"), "1.2.3.5")).toBe(false);
    expect(addressMatches(parseEgressRule("2001:db8::/32"), "2001:db8:ffff::1")).toBe(true);
    expect(addressMatches(parseEgressRule("2001:db8::/32"), "2001:db9::1")).toBe(false);
    expect(addressMatches(parseEgressRule("::/0"), "::1")).toBe(true);
    expect(addressMatches(parseEgressRule(ALL_TRAFFIC), "::1")).toBe(false);
    expect(addressMatches(parseEgressRule("::/0"), "1.2.3.4")).toBe(false);
    expect(addressMatches(parseEgressRule("1.2.3.4"), "not an address")).toBe(false);
  });
});

describe("judgeEgress (E2B precedence)", () => {
  it("allowOut beats denyOut for the same destination; denyOut beats the internet switch", () => {
    const p = policy(["192.88.99.7"], [ALL_TRAFFIC]);
    expect(judgeEgress(p, true, { address: "192.88.99.7" })).toEqual({
      allowed: true,
      rule: "192.88.99.7/32",
      list: "allowOut",
    });
    expect(judgeEgress(p, true, { address: "192.88.99.8" })).toEqual({
      allowed: false,
      rule: "0.0.0.0/0",
      list: "denyOut",
    });
    // Overlapping lists: the allow rule still wins, whichever is more specific.
    const overlap = policy(["192.88.99.0/24"], ["192.88.99.7"]);
    expect(judgeEgress(overlap, true, { address: "192.88.99.7" })).toMatchObject({ allowed: true, list: "allowOut" });
  });

  it("without a matching rule the internet switch decides", () => {
    const none = policy([]);
    expect(judgeEgress(none, true, { address: "192.88.99.7" })).toEqual({
      allowed: true,
      rule: "default",
      list: "default",
    });
    expect(judgeEgress(none, false, { address: "192.88.99.7" })).toEqual({
      allowed: false,
      rule: "allowInternetAccess=false",
      list: "internet-off",
    });
    // allowOut opens a destination even with the internet off (E2B: allow list with internet off).
    expect(judgeEgress(policy(["192.88.99.7"]), false, { address: "192.88.99.7" })).toMatchObject({ allowed: true });
  });

  it("domain rules judge the name (DNS question, SNI, Host); address rules the address", () => {
    const p = policy(["*.example.test"], [ALL_TRAFFIC, "evil.test"]);
    // A DNS question has a name and no address.
    expect(judgeEgress(p, true, { name: "a.example.test" })).toMatchObject({ allowed: true, rule: "*.example.test" });
    // "deny all + allow names": a name no allow rule names is denied by the all-traffic rule.
    expect(judgeEgress(p, true, { name: "other.test" })).toEqual({
      allowed: false,
      rule: ALL_TRAFFIC,
      list: "denyOut",
    });
    expect(judgeEgress(p, true, { name: "evil.test" })).toMatchObject({ allowed: false, rule: "evil.test" });
    // A connection with an allowed SNI to any address: the name rule allows it (allow beats deny).
    expect(judgeEgress(p, true, { address: "192.88.99.9", name: "a.example.test" })).toMatchObject({ allowed: true });
    // A forbidden SNI to an address: denied by the address deny.
    expect(judgeEgress(p, true, { address: "192.88.99.9", name: "forbidden.test" })).toMatchObject({
      allowed: false,
      list: "denyOut",
    });
    // A domain deny with the internet on: the name is denied, other names are not.
    const denyName = policy([], ["evil.test", "*.evil.test"]);
    expect(judgeEgress(denyName, true, { name: "x.evil.test", address: "192.88.99.9" })).toMatchObject({
      allowed: false,
      rule: "*.evil.test",
    });
    expect(judgeEgress(denyName, true, { name: "good.test" })).toMatchObject({ allowed: true, list: "default" });
  });

  it("a DNS question under an address-only deny that is not all traffic falls to the internet switch", () => {
    const p = policy([], ["192.88.99.0/24"]);
    expect(judgeEgress(p, true, { name: "a.example.test" })).toMatchObject({ allowed: true, list: "default" });
    expect(judgeEgress(p, false, { name: "a.example.test" })).toMatchObject({ allowed: false, list: "internet-off" });
    expect(judgeEgress(p, true, { address: "192.88.99.1" })).toMatchObject({ allowed: false, list: "denyOut" });
  });

  it("IPv6 rules judge IPv6 destinations", () => {
    const p = policy(["2001:db8::/32"], ["::/0"]);
    expect(judgeEgress(p, true, { address: "2001:db8::5" })).toMatchObject({ allowed: true, rule: "2001:db8::/32" });
    expect(judgeEgress(p, true, { address: "2001:db9::5" })).toMatchObject({ allowed: false, rule: "::/0" });
    // The IPv6 all-traffic rule does not deny IPv4.
    expect(judgeEgress(p, true, { address: "192.88.99.7" })).toMatchObject({ allowed: true, list: "default" });
  });
});
