import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { createSocket } from "node:dgram";
import { readFile, writeFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAgentConfig } from "../../agent/config.js";
import { createExec } from "../../agent/exec.js";
import { noopLogger } from "../../agent/logger.js";
import { hostTableName } from "../../agent/network/addresses.js";
import { EGRESS_RULE_PREF, type EgressPorts } from "../../agent/network/rules.js";
import { type Slot, SlotManager } from "../../agent/network/slots.js";
import { makeTransparent } from "../../agent/network/transparent.js";
import { parseEgressPolicy } from "../../lib/egress-policy.js";
import {
  IMAGES_ROOT,
  newSandboxId,
  readState,
  requireImage,
  requireRoot,
  TEMPLATE,
  text,
} from "../helpers/agent-fixtures.js";
import { type AgentProcess, freeSlotRange, startAgentProcess } from "../helpers/agent-process.js";
import { METADATA_IP, startTestNet, type TestNet } from "../helpers/test-net.js";

/**
 * The kernel half of the egress policy (issue 20): per-slot sets and chains, the redirections to the
 * agent's resolver and proxy, and AnyIP for the proxy's transparent listeners. Every packet a slot
 * sends goes into the test net (test/helpers/test-net.ts: a netns this test creates, reached only
 * through per-slot routing rules) or nowhere; the stand-in public addresses live only there.
 */

/** A second stand-in public address on the test host (the helper adds one; this test one more). */
const SECOND_PUBLIC = `192.88.99.${randomInt(2, 250)}`;
/** A port that is neither 80 nor 443, so only the kernel's rules decide. */
const OTHER_PORT = randomInt(41_000, 42_000);

async function counter(netns: string, name: string): Promise<number> {
  const out = await execa("ip", ["netns", "exec", netns, "nft", "list", "counter", "inet", "wrenn", name]);
  return Number(/packets (\d+)/.exec(out.stdout)?.[1] ?? "0");
}

/** Starts `socat` answering "<tag>" on every address of the test host, on `port`. */
function serveInTestNet(net: TestNet, port: number, tag: string): ChildProcess {
  return spawn("ip", ["netns", "exec", net.netns, "socat", `TCP-LISTEN:${port},fork,reuseaddr`, `SYSTEM:echo ${tag}`], {
    stdio: "ignore",
  });
}

/** Shell that tries each host:port (3 s each, in parallel) and prints name=open|closed. */
function probeScript(targets: Record<string, readonly [string, number]>, timeoutSec = 3): string {
  const lines = Object.entries(targets).map(
    ([name, [host, port]]) =>
      `(timeout ${timeoutSec} bash -c 'exec 3<>/dev/tcp/${host}/${port}; head -c 64 <&3 >/dev/null' 2>/dev/null && echo ${name}=open || echo ${name}=closed) &`,
  );
  return `${lines.join("\n")}\nwait`;
}

function parseProbes(out: string): Record<string, string> {
  return Object.fromEntries(
    out
      .trim()
      .split("\n")
      .filter((l) => l.includes("="))
      .map((l) => l.split("=")),
  );
}

describe("egress kernel rules: slots, redirections and AnyIP (SlotManager, no agent)", () => {
  const prefix = `k${randomBytes(2).toString("hex")}`;
  const ports: EgressPorts = {
    httpPort: randomInt(43_000, 44_000),
    tlsPort: randomInt(44_000, 45_000),
    dnsPort: randomInt(45_000, 46_000),
    mark: randomInt(0x5800, 0x5900),
    routeTable: randomInt(30_000, 31_000),
  };
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  let net: TestNet;
  let slots: SlotManager;
  let slot: Slot;
  const accepted: { local: string; localPort: number; remote: string }[] = [];
  const questions: string[] = [];

  beforeAll(async () => {
    requireRoot();
    const ipForward = await readFile("/proc/sys/net/ipv4/ip_forward", "utf8");
    cleanups.push(() => writeFile("/proc/sys/net/ipv4/ip_forward", ipForward));
    net = await startTestNet();
    cleanups.push(() => net.stop());
    await net.captureSlots([`${prefix}-0h`, `${prefix}-1h`]);
    const cidrText = await freeSlotRange();
    const config = parseAgentConfig(
      { AGENT_NET_CIDR: cidrText, AGENT_NET_PREFIX: prefix },
      { cpuCount: 2, totalMemoryMb: 4096 },
    );
    if (!config.ok) throw new Error(config.errors.join("; "));
    slots = new SlotManager({
      exec: createExec(noopLogger),
      logger: noopLogger,
      prefix,
      cidr: config.config.network.cidr,
      egress: true,
      ports,
      inspect: "policy",
    });
    cleanups.push(async () => {
      await execa("nft", ["delete", "table", "inet", hostTableName(prefix)], { reject: false });
      await execa(
        "ip",
        [
          "rule",
          "del",
          "fwmark",
          `0x${ports.mark.toString(16)}`,
          "lookup",
          String(ports.routeTable),
          "pref",
          String(EGRESS_RULE_PREF),
        ],
        { reject: false },
      );
      await execa("ip", ["route", "flush", "table", String(ports.routeTable)], { reject: false });
    });
    await slots.init([]);
    slot = await slots.acquire("namespace", true);
    cleanups.push(() => slots.release(slot));

    // The proxy's TLS listener and the resolver, as the agent runs them (plain sockets on 0.0.0.0).
    const proxy: Server = createServer((s: Socket) => {
      accepted.push({ local: s.localAddress ?? "", localPort: s.localPort ?? 0, remote: s.remoteAddress ?? "" });
      s.on("error", () => {});
      s.end("proxy\n");
    });
    await new Promise<void>((r) => proxy.listen(ports.tlsPort, "0.0.0.0", () => r()));
    cleanups.push(() => new Promise((r) => proxy.close(() => r(undefined))));
    await makeTransparent(proxy, createExec(noopLogger));
    const resolver = createSocket("udp4");
    resolver.on("message", (msg, from) => {
      questions.push(`${from.address} ${msg.toString()}`);
      resolver.send("answer", from.port, from.address);
    });
    await new Promise<void>((r) => resolver.bind(ports.dnsPort, "0.0.0.0", () => r()));
    cleanups.push(() => new Promise((r) => resolver.close(() => r(undefined))));
    const other = serveInTestNet(net, OTHER_PORT, "test-host");
    cleanups.push(() => other.kill("SIGKILL"));
    await execa("ip", ["-n", net.netns, "addr", "add", `${SECOND_PUBLIC}/32`, "dev", "lo"]);
    await new Promise((r) => setTimeout(r, 300));
  });

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => {});
  });

  const inSlot = (script: string) =>
    execa("ip", ["netns", "exec", slot.netns, "bash", "-c", script], { reject: false });

  it("redirects 443 to the transparent proxy with the original address kept, and DNS to the resolver", async () => {
    await slots.applyPolicy(slot, parseEgressPolicy({ allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] }), true);
    const tls = await inSlot(`timeout 3 bash -c 'exec 3<>/dev/tcp/${net.publicIp}/443; head -c 6 <&3'`);
    expect(tls.stdout).toBe("proxy");
    expect(accepted.at(-1)).toEqual({ local: net.publicIp, localPort: ports.tlsPort, remote: slot.slotIp });
    // Whatever nameserver the guest asks (here a test-net address), the agent's resolver answers.
    const dns = await inSlot(`exec 3<>/dev/udp/${net.publicIp}/53; printf question >&3; timeout 3 head -c 6 <&3`);
    expect(dns.stdout).toBe("answer");
    expect(questions).toContain(`${slot.slotIp} question`);
    // A blocked address is not redirected: it stays dropped.
    const before = accepted.length;
    const blocked = await inSlot(`timeout 2 bash -c 'exec 3<>/dev/tcp/${METADATA_IP}/443' && echo open || echo closed`);
    expect(blocked.stdout.trim()).toBe("closed");
    expect(accepted.length).toBe(before);
  });

  it("opens addresses the resolver answered for, on any port, and forgets them on a policy change", async () => {
    const probe = () => inSlot(probeScript({ second: [SECOND_PUBLIC, OTHER_PORT] }, 2));
    expect(parseProbes((await probe()).stdout)).toEqual({ second: "closed" });
    await slots.allowResolved(slot, [SECOND_PUBLIC, "10.9.9.9"], 30);
    expect(parseProbes((await probe()).stdout)).toEqual({ second: "open" });
    const elements = await execa("ip", ["netns", "exec", slot.netns, "nft", "list", "set", "inet", "wrenn", "dns_ok"]);
    expect(elements.stdout).toContain(SECOND_PUBLIC);
    expect(elements.stdout).not.toContain("10.9.9.9");
    // Re-applying (a policy update) empties dns_ok.
    await slots.applyPolicy(slot, parseEgressPolicy({ allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] }), true);
    expect(parseProbes((await probe()).stdout)).toEqual({ second: "closed" });
  });

  it("an empty policy gives the slot back as made: no redirection, the internet switch alone", async () => {
    await slots.applyPolicy(slot, parseEgressPolicy({ allowOut: [], denyOut: [] }), true);
    const table = (await execa("ip", ["netns", "exec", slot.netns, "nft", "list", "table", "inet", "wrenn"])).stdout;
    expect(table).toMatch(/chain policy_nat \{\n\s*\}/);
    expect(table).toMatch(/chain egress \{\n\s*accept\n\s*\}/);
    const before = accepted.length;
    const out = await inSlot(probeScript({ web: [net.publicIp, 80], other: [SECOND_PUBLIC, OTHER_PORT] }));
    expect(parseProbes(out.stdout)).toEqual({ web: "open", other: "open" });
    expect(accepted.length).toBe(before);
  });
  it("a VM's slot (TAP, forward path): the same redirections and address rules", async () => {
    // The VM is a netns on the far end of a veth named like the TAP, with the guest's address.
    const vm = await slots.acquire("vm", true);
    cleanups.push(() => slots.release(vm));
    const guest = `${prefix}g`;
    cleanups.push(() => execa("ip", ["netns", "del", guest], { reject: false }));
    await execa("ip", ["netns", "add", guest]);
    await execa("ip", ["-n", vm.netns, "link", "del", "tap0"]);
    await execa("ip", ["-n", vm.netns, "link", "add", "tap0", "type", "veth", "peer", "name", "eth0", "netns", guest]);
    await execa("ip", ["-n", vm.netns, "-batch", "-"], {
      input: "addr add 169.254.0.22/30 dev tap0\nlink set tap0 up\n",
    });
    await execa("ip", ["-n", guest, "-batch", "-"], {
      input:
        "link set lo up\naddr add 169.254.0.21/30 dev eth0\nlink set eth0 up\nroute add default via 169.254.0.22\n",
    });
    await slots.applyPolicy(
      vm,
      parseEgressPolicy({ allowOut: [SECOND_PUBLIC, "*.example.test"], denyOut: ["0.0.0.0/0"] }),
      true,
    );
    const inGuest = (script: string) => execa("ip", ["netns", "exec", guest, "bash", "-c", script], { reject: false });
    const tls = await inGuest(`timeout 3 bash -c 'exec 3<>/dev/tcp/${net.publicIp}/443; head -c 6 <&3'`);
    expect(tls.stdout).toBe("proxy");
    expect(accepted.at(-1)).toEqual({ local: net.publicIp, localPort: ports.tlsPort, remote: vm.slotIp });
    const dns = await inGuest(`exec 3<>/dev/udp/${net.publicIp}/53; printf vm-question >&3; timeout 3 head -c 6 <&3`);
    expect(dns.stdout).toBe("answer");
    expect(questions).toContain(`${vm.slotIp} vm-question`);
    const probes = await inGuest(
      probeScript(
        { allowed: [SECOND_PUBLIC, OTHER_PORT], denied: [net.publicIp, OTHER_PORT], metadata: [METADATA_IP, 80] },
        2,
      ),
    );
    expect(parseProbes(probes.stdout)).toEqual({ allowed: "open", denied: "closed", metadata: "closed" });
    expect(await counter(vm.netns, "policy_dropped")).toBeGreaterThan(0);
    expect(await counter(vm.netns, "private_dropped")).toBeGreaterThan(0);
  });
});

describe("egress kernel rules through the agent (namespace runtime)", () => {
  let agent: AgentProcess;
  let net: TestNet;
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  const netPrefix = `q${randomBytes(2).toString("hex")}`;

  beforeAll(async () => {
    requireRoot();
    await requireImage();
    const ipForward = await readFile("/proc/sys/net/ipv4/ip_forward", "utf8");
    cleanups.push(() => writeFile("/proc/sys/net/ipv4/ip_forward", ipForward));
    net = await startTestNet();
    cleanups.push(() => net.stop());
    // Captured before the agent makes them: the agent takes the lowest free slot index.
    await net.captureSlots(Array.from({ length: 6 }, (_, i) => `${netPrefix}-${i}h`));
    await execa("ip", ["-n", net.netns, "addr", "add", `${SECOND_PUBLIC}/32`, "dev", "lo"]);
    const other = serveInTestNet(net, OTHER_PORT, "test-host");
    cleanups.push(() => other.kill("SIGKILL"));
    agent = await startAgentProcess({
      runtime: "namespace",
      namespaceOnly: true,
      rootDir: IMAGES_ROOT,
      netPrefix,
      env: {
        AGENT_EGRESS: "on",
        // Ports of our own, should this agent run the resolver and proxy next to another test's agent.
        AGENT_EGRESS_HTTP_PORT: String(randomInt(46_000, 47_000)),
        AGENT_EGRESS_TLS_PORT: String(randomInt(47_000, 48_000)),
        AGENT_DNS_PORT: String(randomInt(48_000, 49_000)),
        AGENT_DNS_UPSTREAM: `${net.privateIp}:53`,
      },
    });
    cleanups.push(() => agent.stop());
  });

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => {});
  });

  async function probe(
    id: string,
    targets: Record<string, readonly [string, number]>,
  ): Promise<Record<string, string>> {
    const result = await agent.client.exec({ sandboxId: id, cmd: "/bin/bash", args: ["-c", probeScript(targets)] });
    return parseProbes(text(result.stdout));
  }

  async function netnsOf(id: string): Promise<string> {
    return `${agent.netPrefix}-${(await readState(agent, id)).slot?.index}`;
  }

  it("deny all + allow one IP: that IP on any port, nothing else; changed while running within a second", async () => {
    const id = newSandboxId();
    await agent.client.createSandbox({
      sandboxId: id,
      template: TEMPLATE,
      internetAccess: true,
      network: { allowOut: [net.publicIp], denyOut: ["0.0.0.0/0"] },
    });
    const netns = await netnsOf(id);
    expect(await probe(id, { allowed: [net.publicIp, OTHER_PORT], other: [SECOND_PUBLIC, OTHER_PORT] })).toEqual({
      allowed: "open",
      other: "closed",
    });
    expect(await counter(netns, "policy_dropped")).toBeGreaterThan(0);

    // Swap the allowed address while the sandbox runs: the next connection sees the new rules.
    const started = performance.now();
    await agent.client.updateSandboxNetwork({
      sandboxId: id,
      network: { allowOut: [SECOND_PUBLIC], denyOut: ["0.0.0.0/0"] },
    });
    const result = await agent.client.exec({
      sandboxId: id,
      cmd: "/bin/bash",
      args: ["-c", probeScript({ allowed: [SECOND_PUBLIC, OTHER_PORT], old: [net.publicIp, OTHER_PORT] }, 1)],
    });
    expect(parseProbes(text(result.stdout))).toEqual({ allowed: "open", old: "closed" });
    // The update itself (RPC, nft transaction, state file) took well under a second.
    const tookMs = performance.now() - started;
    expect(tookMs).toBeLessThan(2_500);
    const updateOnly = performance.now();
    await agent.client.updateSandboxNetwork({
      sandboxId: id,
      network: { allowOut: [net.publicIp], denyOut: ["0.0.0.0/0"] },
    });
    expect(performance.now() - updateOnly).toBeLessThan(1_000);
    expect(await probe(id, { allowed: [net.publicIp, OTHER_PORT] })).toEqual({ allowed: "open" });
    // Persisted with the sandbox.
    const state = (await readState(agent, id)) as unknown as { network?: unknown };
    expect(state.network).toEqual({ allowOut: [net.publicIp], denyOut: ["0.0.0.0/0"] });
    await agent.client.destroySandbox({ sandboxId: id });
  });

  it("allowOut cannot open a private range, the metadata address or a host gateway", async () => {
    const id = newSandboxId();
    await agent.client.createSandbox({
      sandboxId: id,
      template: TEMPLATE,
      internetAccess: true,
      network: {
        allowOut: ["10.0.0.0/8", "172.16.0.0/12", "169.254.169.254", "192.168.0.0/16", net.gatewayIp, "0.0.0.0/0"],
        denyOut: [],
      },
    });
    const netns = await netnsOf(id);
    const before = await counter(netns, "private_dropped");
    expect(
      await probe(id, {
        privateHost: [net.privateIp, 80],
        metadata: [METADATA_IP, 80],
        gateway: [net.gatewayIp, 80],
        control: [net.publicIp, 80],
      }),
    ).toEqual({ privateHost: "closed", metadata: "closed", gateway: "closed", control: "open" });
    expect(await counter(netns, "private_dropped")).toBeGreaterThanOrEqual(before + 3);
    await agent.client.destroySandbox({ sandboxId: id });
  });

  it("a sandbox without a policy behaves as today (the internet switch alone)", async () => {
    const open = newSandboxId();
    const closed = newSandboxId();
    await Promise.all([
      agent.client.createSandbox({ sandboxId: open, template: TEMPLATE, internetAccess: true }),
      agent.client.createSandbox({ sandboxId: closed, template: TEMPLATE, internetAccess: false }),
    ]);
    const targets = { web: [net.publicIp, 80], other: [SECOND_PUBLIC, OTHER_PORT] } as const;
    expect(await probe(open, targets)).toEqual({ web: "open", other: "open" });
    expect(await probe(closed, targets)).toEqual({ web: "closed", other: "closed" });
    const table = (await execa("ip", ["netns", "exec", await netnsOf(open), "nft", "list", "table", "inet", "wrenn"]))
      .stdout;
    expect(table).toMatch(/chain policy_nat \{\n\s*\}/);
    expect(table).not.toContain("dnat ip to ip daddr");
    // Turning the internet off by an update (empty policy) closes it at once.
    await agent.client.updateSandboxNetwork({
      sandboxId: open,
      network: { allowOut: [], denyOut: [] },
      internetAccess: false,
    });
    expect(await probe(open, targets)).toEqual({ web: "closed", other: "closed" });
    await Promise.all([
      agent.client.destroySandbox({ sandboxId: open }),
      agent.client.destroySandbox({ sandboxId: closed }),
    ]);
  });
});
