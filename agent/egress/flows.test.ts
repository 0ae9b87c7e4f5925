import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { parseEgressPolicy } from "../../lib/egress-policy.js";
import type { Exec, ExecResult } from "../exec.js";
import { noopLogger } from "../logger.js";
import { ConnectionLog } from "./connection-log.js";
import { type ConntrackFlow, FlowLog, type FlowTarget, parseConntrackFlow, parseDeniedSet } from "./flows.js";
import { ResolvedNames } from "./resolved-names.js";

/**
 * The flow log's reading of the kernel: conntrack's XML events and listings, nft's JSON of a slot's
 * denied set, and the path from them to connection-log entries (rule named by the policy, bytes at the
 * end, repeats and floods bounded). The event source is a real child process printing recorded
 * conntrack lines; `exec` answers as conntrack and nft would. The kernel side is proven by
 * test/integration/egress-flows.test.ts.
 */

const SB = "flowsflowsflowsflows";
const SLOT_IP = "10.11.0.2";

const flowLine = (o: {
  type?: "new" | "update" | "destroy";
  id: string;
  proto?: "tcp" | "udp";
  dst: string;
  dport: number;
  state?: string;
  bytes?: [number, number];
}) => {
  const proto = o.proto ?? "tcp";
  const num = proto === "tcp" ? 6 : 17;
  const counters = (n: number | undefined) =>
    n === undefined ? "" : `<counters><packets>3</packets><bytes>${n}</bytes></counters>`;
  return (
    `<flow${o.type ? ` type="${o.type}"` : ""}><meta direction="original"><layer3 protonum="2" protoname="ipv4">` +
    `<src>${SLOT_IP}</src><dst>${o.dst}</dst></layer3><layer4 protonum="${num}" protoname="${proto}">` +
    `<sport>40000</sport><dport>${o.dport}</dport></layer4>${counters(o.bytes?.[0])}</meta>` +
    `<meta direction="reply"><layer3 protonum="2" protoname="ipv4"><src>${o.dst}</src><dst>192.0.2.1</dst></layer3>` +
    `<layer4 protonum="${num}" protoname="${proto}"><sport>${o.dport}</sport><dport>40000</dport></layer4>${counters(o.bytes?.[1])}</meta>` +
    `<meta direction="independent">${o.state ? `<state>${o.state}</state>` : ""}<timeout>120</timeout><id>${o.id}</id></meta></flow>`
  );
};

const deniedJson = (elems: [string, "tcp" | "udp", number, number][]) =>
  JSON.stringify({
    nftables: [
      { metainfo: { version: "1.0.6" } },
      {
        set: {
          family: "inet",
          name: "denied_flows",
          table: "wrenn",
          elem: elems.map(([a, p, port, expires]) => ({ elem: { val: { concat: [a, p, port] }, expires } })),
        },
      },
    ],
  });

/** Parses a recorded line as the flow log would, failing the test on a line it cannot read. */
function flow(line: string): ConntrackFlow {
  const parsed = parseConntrackFlow(line);
  if (!parsed) throw new Error(`unparsable: ${line}`);
  return parsed;
}

describe("parsers", () => {
  it("reads a conntrack event and a listing line, with and without counters", () => {
    expect(parseConntrackFlow(flowLine({ type: "new", id: "7", dst: "192.88.99.5", dport: 7000 }))).toEqual({
      type: "new",
      id: "7",
      protocol: "tcp",
      src: SLOT_IP,
      dst: "192.88.99.5",
      sport: 40000,
      dport: 7000,
      state: undefined,
      bytesOut: undefined,
      bytesIn: undefined,
    });
    const listed = parseConntrackFlow(
      `${flowLine({ id: "8", proto: "udp", dst: "192.88.99.6", dport: 53, bytes: [228, 100] })} [USERSPACE] portid=1`,
    );
    expect(listed).toMatchObject({ type: undefined, protocol: "udp", bytesOut: 228, bytesIn: 100 });
    expect(parseConntrackFlow('<?xml version="1.0"?>')).toBeUndefined();
    expect(parseConntrackFlow("<flow><meta></flow>")).toBeUndefined();
  });

  it("reads a denied set, skipping what is not an address . tcp|udp . port", () => {
    expect(parseDeniedSet(deniedJson([["192.88.99.7", "tcp", 22, 59]]))).toEqual([
      { address: "192.88.99.7", protocol: "tcp", port: 22, expires: 59 },
    ]);
    expect(parseDeniedSet("not json")).toEqual([]);
    expect(parseDeniedSet(JSON.stringify({ nftables: [{ set: { name: "denied_flows" } }] }))).toEqual([]);
    const odd = JSON.stringify({ nftables: [{ set: { elem: [{ elem: { val: { concat: ["x", "icmp", 0] } } }] } }] });
    expect(parseDeniedSet(odd)).toEqual([]);
  });
});

describe("FlowLog", () => {
  let dir: string;
  let log: ConnectionLog;
  let denied: string;
  let deniedBy: Record<string, string>;
  let listing: string;
  let execCalls: string[][];
  const policy = parseEgressPolicy({ allowOut: ["192.88.99.0/24", "*.example.test"], denyOut: ["0.0.0.0/0"] });
  const target: FlowTarget = {
    sandboxId: SB,
    policy,
    internetAccess: true,
    slot: { netns: "wtest-0", slotIp: SLOT_IP, policed: true },
  };
  const exec: Exec = async (file, args) => {
    execCalls.push([file, ...args]);
    // The denied sets come from one `sh` loop over the due slots, each after its `@@ <netns>` line.
    const stdout =
      file === "conntrack"
        ? listing
        : args
            .slice(3)
            .map((ns) => `@@ ${ns}\n${deniedBy[ns] ?? denied}\n`)
            .join("");
    return { exitCode: 0, stdout, stderr: "" } satisfies ExecResult;
  };
  const names = new ResolvedNames();

  const dirs: string[] = [];
  afterAll(async () => {
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });
  beforeEach(async () => {
    // A directory per test: an earlier test's log may still be flushing its file when the next starts
    // (seen in CI: a scan test counted another test's entries).
    dir = await mkdtemp(join(tmpdir(), "wrenn-flows-"));
    dirs.push(dir);
    log = new ConnectionLog({ dir, logger: noopLogger });
    denied = deniedJson([]);
    listing = "";
    deniedBy = {};
    execCalls = [];
  });

  function flowLog(
    lines: string[] = [],
    options: { maxEntriesPerSecond?: number; reconcileMs?: number; targets?: FlowTarget[] } = {},
  ) {
    const { targets = [target], ...tuning } = options;
    return new FlowLog({
      targets: { bySlotIp: (ip) => targets.find((t) => t.slot.slotIp === ip), all: () => targets },
      log,
      logger: noopLogger,
      exec,
      slotCidr: "10.11.0.0/16",
      servicePorts: [15080, 15443, 15353],
      resolvedNames: names,
      pollIntervalMs: 50,
      ...tuning,
      // A real process printing recorded events, as `conntrack -E` would.
      spawnEvents: () => spawn("printf", ["%s\\n", ...lines], { stdio: ["ignore", "pipe", "pipe"] }),
    });
  }

  it("logs a new flow allowed with the rule that allows it, and completes it with the destroy's counters", async () => {
    names.remember(SB, "a.example.test", ["192.88.99.5"], 60);
    const flows = flowLog();
    await flows.onFlow(flow(flowLine({ type: "new", id: "1", dst: "192.88.99.5", dport: 7000 })));
    await flows.onFlow(
      flow(flowLine({ type: "destroy", id: "1", proto: "tcp", dst: "192.88.99.5", dport: 7000, bytes: [1500, 900] })),
    );
    expect(await log.list(SB, { limit: 10 })).toMatchObject([
      {
        protocol: "tcp",
        address: "192.88.99.5",
        port: 7000,
        name: "a.example.test",
        nameSource: "dns",
        verdict: "allowed",
        rule: "192.88.99.0/24",
        list: "allowOut",
        bytesOut: 1500,
        bytesIn: 900,
      },
    ]);
  });

  it("skips the agent's own services, other sources and flows it never saw begin", async () => {
    const flows = flowLog();
    await flows.onFlow(flow(flowLine({ type: "new", id: "2", dst: "192.88.99.5", dport: 15443 })));
    await flows.onFlow({
      ...flow(flowLine({ type: "new", id: "3", dst: "1.2.3.4", dport: 22 })),
      src: "10.11.0.6",
    });
    await flows.onFlow(flow(flowLine({ type: "destroy", id: "4", dst: "1.2.3.4", dport: 22, bytes: [1, 1] })));
    expect(await log.list(SB, { limit: 10 })).toEqual([]);
  });

  it("completes a TCP flow at TIME_WAIT from one listing on the next tick", async () => {
    listing = flowLine({ id: "5", dst: "192.88.99.9", dport: 22, state: "TIME_WAIT", bytes: [4000, 3000] });
    const flows = flowLog([
      flowLine({ type: "new", id: "5", dst: "192.88.99.9", dport: 22 }),
      flowLine({ type: "update", id: "5", dst: "192.88.99.9", dport: 22, state: "TIME_WAIT" }),
    ]);
    await flows.start();
    try {
      await expect
        .poll(async () => (await log.list(SB, { limit: 10 }))[0], { timeout: 3000 })
        .toMatchObject({ address: "192.88.99.9", port: 22, verdict: "allowed", bytesOut: 4000, bytesIn: 3000 });
      expect(execCalls.some((c) => c[0] === "conntrack" && c.includes("-L"))).toBe(true);
    } finally {
      await flows.close();
    }
  });

  it("completes a flow whose destroy event was lost, a round after the table no longer has it", async () => {
    listing = flowLine({ id: "9", proto: "udp", dst: "192.88.99.9", dport: 5000, bytes: [228, 128] });
    const flows = flowLog([flowLine({ type: "new", id: "9", proto: "udp", dst: "192.88.99.9", dport: 5000 })], {
      reconcileMs: 200,
    });
    await flows.start();
    try {
      await expect
        .poll(() => execCalls.filter((c) => c[0] === "conntrack").length, { timeout: 3000 })
        .toBeGreaterThan(0);
      // Seen open with its counters so far; then gone from the table, and no destroy event comes.
      listing = "";
      await expect
        .poll(async () => (await log.list(SB, { limit: 10 }))[0], { timeout: 3000 })
        .toMatchObject({ protocol: "udp", bytesOut: 228, bytesIn: 128 });
    } finally {
      await flows.close();
    }
  });

  it("logs each denied destination once while the kernel remembers it, with the rule that denies it", async () => {
    const flows = flowLog();
    denied = deniedJson([
      ["8.8.8.8", "udp", 123, 59],
      ["1.2.3.4", "tcp", 22, 59],
    ]);
    await flows.pollDenied();
    await flows.pollDenied();
    denied = deniedJson([
      ["8.8.8.8", "udp", 123, 58],
      ["1.2.3.4", "tcp", 22, 58],
      ["1.2.3.4", "tcp", 23, 60],
    ]);
    await flows.pollDenied();
    expect(execCalls[0]?.slice(0, 2)).toEqual(["sh", "-c"]);
    expect(execCalls[0]?.[2]).toContain("nft -j list set inet wrenn denied_flows");
    expect(execCalls[0]?.slice(3)).toEqual(["sh", "wtest-0"]);
    const entries = await log.list(SB, { limit: 10 });
    expect(entries.map((e) => [e.protocol, e.address, e.port, e.verdict, e.rule, e.list])).toEqual([
      ["udp", "8.8.8.8", 123, "denied", "0.0.0.0/0", "denyOut"],
      ["tcp", "1.2.3.4", 22, "denied", "0.0.0.0/0", "denyOut"],
      ["tcp", "1.2.3.4", 23, "denied", "0.0.0.0/0", "denyOut"],
    ]);
    expect(entries.every((e) => e.bytesOut === 0 && e.bytesIn === 0 && e.endedAt !== undefined)).toBe(true);
  });

  it("logs the attempts of sandboxes without a policy (egress off, or into blocked ranges), reading their sets seldom", async () => {
    const off: FlowTarget = {
      sandboxId: "sbxoff000000000000aa",
      policy: parseEgressPolicy({ allowOut: [], denyOut: [] }),
      internetAccess: false,
      slot: { netns: "wtest-1", slotIp: "10.11.0.9" },
    };
    const on: FlowTarget = {
      sandboxId: "sbxon0000000000000aa",
      policy: parseEgressPolicy({ allowOut: [], denyOut: [] }),
      internetAccess: true,
      slot: { netns: "wtest-2", slotIp: "10.11.0.13" },
    };
    const flows = flowLog([], { targets: [target, off, on] });
    deniedBy = {
      "wtest-1": deniedJson([["192.88.99.7", "tcp", 443, 50]]),
      "wtest-2": deniedJson([["169.254.169.254", "tcp", 80, 60]]),
    };
    const before = Date.now();
    await flows.pollDenied();
    // One child for every due slot; a second poll right after reads only the policy slot's set.
    expect(execCalls[0]?.slice(4)).toEqual(["wtest-0", "wtest-1", "wtest-2"]);
    await flows.pollDenied();
    expect(execCalls[1]?.slice(4)).toEqual(["wtest-0"]);
    const [offEntry] = await log.list(off.sandboxId, { limit: 10 });
    expect(offEntry).toMatchObject({
      address: "192.88.99.7",
      port: 443,
      verdict: "denied",
      rule: "allowInternetAccess=false",
      list: "internet-off",
    });
    // Dated by what is left of the set's minute: the first attempt was about 10 s before the read.
    expect(offEntry?.time).toBeGreaterThanOrEqual(before - 11_000);
    expect(offEntry?.time).toBeLessThanOrEqual(Date.now() - 9_000);
    const [onEntry] = await log.list(on.sandboxId, { limit: 10 });
    expect(onEntry).toMatchObject({ address: "169.254.169.254", port: 80, verdict: "denied", list: "platform" });
    await flows.close();
  });

  it("bounds a scan: at most the per-second budget (and its burst) of entries", async () => {
    const flows = flowLog([], { maxEntriesPerSecond: 10 });
    const started = Date.now();
    denied = deniedJson(
      Array.from({ length: 1024 }, (_, i) => ["1.2.3.4", "tcp", i + 1, 60] as [string, "tcp", number, number]),
    );
    await flows.pollDenied();
    for (let i = 0; i < 500; i++) {
      await flows.onFlow(flow(flowLine({ type: "new", id: `s${i}`, dst: "192.88.99.5", dport: 1000 + i })));
    }
    const entries = await log.list(SB, { limit: 1000 });
    // The burst (20), and what the budget refilled meanwhile (10 a second) on a loaded machine.
    const refilled = Math.ceil(((Date.now() - started) / 1000) * 10);
    expect(entries.length).toBeGreaterThanOrEqual(20);
    expect(entries.length).toBeLessThanOrEqual(20 + refilled + 1);
  });
});
