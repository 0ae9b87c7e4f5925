import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ConnectionEntry,
  ConnectionProtocol,
  ConnectionVerdict,
} from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { IMAGES_ROOT, newSandboxId, requireImage, requireRoot, TEMPLATE, text } from "../helpers/agent-fixtures.js";
import { type AgentProcess, freeSlotRange, startAgentProcess, suiteRuntime } from "../helpers/agent-process.js";
import { startTestInternet, type TestInternet } from "../helpers/test-internet.js";

/**
 * The connection log's entries for flows the kernel decides (issue 20): TCP and UDP on ports the agent's
 * proxy and resolver do not see. Allowed flows come from conntrack events in the root netns (completed
 * with the kernel's IP byte counts), denied attempts from the slot's `denied_flows` set. A real agent
 * (the suite's runtime: namespace, or gVisor in the integration-gvisor project), against the fake internet of test/helpers/test-internet.ts; a counter on
 * the host's default route proves nothing left the machine.
 */

const SINK_PORT = randomInt(41_000, 42_000);
const UDP_PORT = SINK_PORT + 1;
/** Bytes the guest sends to the sink, and the sink's answer. */
const UP = 100_000;
const DOWN = 5_000;
const DATAGRAM = 200;

/**
 * In the test netns: a TCP sink that reads exactly UP bytes then answers DOWN bytes and closes, and a
 * UDP echo; both on every address of the netns.
 */
const SERVERS = `
import socket, sys, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", ${SINK_PORT})); s.listen(16)
    while True:
        c, _ = s.accept()
        def serve(c):
            got = 0
            while got < ${UP}:
                d = c.recv(65536)
                if not d: break
                got += len(d)
            c.sendall(b"d" * ${DOWN}); c.close()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
# One UDP socket per address: a reply must come from the address asked (bound to 0.0.0.0 it would not).
def udp(address):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((address, ${UDP_PORT}))
    while True:
        m, a = u.recvfrom(65536); u.sendto(m, a)
for address in sys.argv[1:]:
    threading.Thread(target=udp, args=(address,), daemon=True).start()
threading.Event().wait()
`;

describe(`connection log: flows the kernel decides (${suiteRuntime()})`, () => {
  let agent: AgentProcess;
  let net: TestInternet;
  let servers: ChildProcess | undefined;
  let allowedIp: string;
  let otherIp: string;
  const cleanups: (() => Promise<unknown> | unknown)[] = [];

  beforeAll(async () => {
    requireRoot();
    await requireImage();
    const ipForward = await readFile("/proc/sys/net/ipv4/ip_forward", "utf8");
    cleanups.push(() => writeFile("/proc/sys/net/ipv4/ip_forward", ipForward));
    net = await startTestInternet({ names: ["a.example.test", "b.example.test"], unnamedHosts: 1 });
    cleanups.push(() => net.stop());
    allowedIp = net.ipOf("a.example.test");
    otherIp = net.ipOf("b.example.test");
    servers = spawn("ip", ["netns", "exec", net.netns, "python3", "-c", SERVERS, ...net.addresses], {
      stdio: "ignore",
    });
    cleanups.push(() => servers?.kill("SIGKILL"));
    const netPrefix = `f${randomBytes(2).toString("hex")}`;
    const netCidr = await freeSlotRange();
    await net.captureSlots(Array.from({ length: 8 }, (_, i) => `${netPrefix}-${i}h`));
    await net.watchSlots(netCidr);
    agent = await startAgentProcess({
      runtime: "namespace",
      rootDir: IMAGES_ROOT,
      netPrefix,
      netCidr,
      env: {
        ...net.agentEnv,
        // Sandboxes without a policy have their denied attempts read every 20 s by default.
        AGENT_EGRESS_IDLE_LOG_POLL_MS: "1000",
      },
    });
    cleanups.push(() => agent.stop());
  });

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => {});
  });

  async function run(id: string, script: string): Promise<string> {
    const result = await agent.client.exec({ sandboxId: id, cmd: "/bin/bash", args: ["-c", script] });
    return text(result.stdout);
  }

  async function log(id: string): Promise<ConnectionEntry[]> {
    return (await agent.client.listConnections({ sandboxId: id, limit: 1000 })).entries;
  }

  /** Polls the log until `check` passes. */
  async function eventually(id: string, check: (entries: ConnectionEntry[]) => void, timeoutMs = 15_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const entries = await log(id);
      try {
        check(entries);
        return entries;
      } catch (err) {
        if (Date.now() > deadline) {
          throw new Error(`${(err as Error).message}\nlog:\n${entries.map((e) => JSON.stringify(e, big)).join("\n")}`);
        }
      }
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  const big = (_: string, v: unknown) => (typeof v === "bigint" ? Number(v) : v);

  /** Sends UP bytes to the sink (an address or a name), reads its DOWN-byte answer: prints how many came back. */
  const tcpExchange = (host: string) =>
    `python3 -c '${[
      "import socket",
      `s = socket.create_connection(("${host}", ${SINK_PORT}), timeout=10)`,
      `s.sendall(b"u" * ${UP})`,
      "got = 0",
      "while True:",
      "    d = s.recv(65536)",
      "    if not d: break",
      "    got += len(d)",
      "s.close()",
      "print(got)",
    ].join("\n")}'`;
  /** One datagram to the UDP echo, prints what came back (as a byte count). */
  const udpExchange = (ip: string) =>
    `exec 4<>/dev/udp/${ip}/${UDP_PORT} && head -c ${DATAGRAM} /dev/zero | tr '\\0' u >&4 && timeout 3 head -c ${DATAGRAM} <&4 | wc -c`;
  /** A connection attempt that fails fast when dropped (the kernel never answers). */
  const tcpAttempt = (ip: string, port: number) =>
    `timeout 2 bash -c 'exec 3<>/dev/tcp/${ip}/${port}' 2>/dev/null && echo open || echo closed`;

  it("logs an allowed TCP flow on another port with its bytes, and a denied one with its rule", async () => {
    const id = newSandboxId();
    await agent.client.createSandbox({
      sandboxId: id,
      template: TEMPLATE,
      internetAccess: true,
      network: { allowOut: [allowedIp], denyOut: ["0.0.0.0/0"] },
    });
    expect((await run(id, tcpExchange(allowedIp))).trim()).toBe(String(DOWN));
    expect((await run(id, tcpAttempt(otherIp, SINK_PORT))).trim()).toBe("closed");
    expect((await run(id, tcpAttempt(otherIp, SINK_PORT))).trim()).toBe("closed");

    const entries = await eventually(id, (entries) => {
      const allowed = entries.find(
        (e) => e.protocol === ConnectionProtocol.TCP && e.address === allowedIp && e.port === SINK_PORT,
      );
      expect(allowed).toMatchObject({ verdict: ConnectionVerdict.ALLOWED, rule: `${allowedIp}/32`, list: "allowOut" });
      // The kernel's counts are IP bytes: the payload plus a header per packet (at most ~70 packets here).
      expect(Number(allowed?.bytesOut ?? 0)).toBeGreaterThanOrEqual(UP);
      expect(Number(allowed?.bytesOut ?? 0)).toBeLessThan(UP + 12_000);
      expect(Number(allowed?.bytesIn ?? 0)).toBeGreaterThanOrEqual(DOWN);
      expect(Number(allowed?.bytesIn ?? 0)).toBeLessThan(DOWN + 12_000);
      expect(allowed?.endedAt).toBeDefined();
      const denied = entries.filter(
        (e) => e.protocol === ConnectionProtocol.TCP && e.address === otherIp && e.port === SINK_PORT,
      );
      // Two attempts (and their SYN retries) within the set's minute: one entry.
      expect(denied).toHaveLength(1);
      expect(denied[0]).toMatchObject({ verdict: ConnectionVerdict.DENIED, rule: "0.0.0.0/0", list: "denyOut" });
    });
    expect(entries.every((e) => e.protocol !== ConnectionProtocol.DNS)).toBe(true);
    expect(await net.leakedPackets()).toBe(0);
    await agent.client.destroySandbox({ sandboxId: id });
  });

  it("logs UDP allowed (exact bytes at its end) and denied, and names an address by the resolver's answer", async () => {
    const id = newSandboxId();
    await agent.client.createSandbox({
      sandboxId: id,
      template: TEMPLATE,
      internetAccess: true,
      network: { allowOut: [allowedIp, "a.example.test"], denyOut: ["0.0.0.0/0"] },
    });
    expect((await run(id, udpExchange(allowedIp))).trim()).toBe(String(DATAGRAM));
    // Dropped in the slot: the send itself fails (EPERM) or nothing comes back.
    expect((await run(id, `(${udpExchange(otherIp)}) 2>/dev/null; true`)).trim()).not.toBe(String(DATAGRAM));
    await eventually(id, (entries) => {
      expect(entries.find((e) => e.protocol === ConnectionProtocol.UDP && e.address === allowedIp)).toBeDefined();
    });
    // A UDP flow ends when the kernel forgets it (30 s after its last packet): end it now, for the test.
    await execa("conntrack", ["-D", "-p", "udp", "-d", allowedIp, "--dport", String(UDP_PORT)], { reject: false });
    await eventually(id, (entries) => {
      const allowed = entries.find((e) => e.protocol === ConnectionProtocol.UDP && e.address === allowedIp);
      // One datagram each way: the payload and its IP and UDP headers (28 bytes), exactly.
      expect(allowed).toMatchObject({
        verdict: ConnectionVerdict.ALLOWED,
        port: UDP_PORT,
        rule: `${allowedIp}/32`,
        list: "allowOut",
        bytesOut: BigInt(DATAGRAM + 28),
        bytesIn: BigInt(DATAGRAM + 28),
      });
      expect(
        entries.find((e) => e.protocol === ConnectionProtocol.UDP && e.address === otherIp && e.port === UDP_PORT),
      ).toMatchObject({ verdict: ConnectionVerdict.DENIED, rule: "0.0.0.0/0", list: "denyOut" });
    });

    // A name the policy allows: the resolver opens its address (dns_ok) and the kernel flow carries the name.
    const out = await run(id, tcpExchange("a.example.test"));
    expect(out.trim()).toBe(String(DOWN));
    await eventually(id, (entries) => {
      expect(
        entries.find((e) => e.protocol === ConnectionProtocol.TCP && e.address === allowedIp && e.port === SINK_PORT),
      ).toMatchObject({ verdict: ConnectionVerdict.ALLOWED, name: "a.example.test" });
    });
    expect(await net.leakedPackets()).toBe(0);
    await agent.client.destroySandbox({ sandboxId: id });
  });

  it("logs the attempts of sandboxes without rules: egress off, and into the platform's blocked ranges", async () => {
    const off = newSandboxId();
    const on = newSandboxId();
    await agent.client.createSandbox({ sandboxId: off, template: TEMPLATE, internetAccess: false });
    await agent.client.createSandbox({ sandboxId: on, template: TEMPLATE, internetAccess: true });
    try {
      expect((await run(off, tcpAttempt(allowedIp, SINK_PORT))).trim()).toBe("closed");
      // The test internet's private-range end: a blocked range whatever the switch says.
      expect((await run(on, tcpAttempt(net.privateIp, SINK_PORT))).trim()).toBe("closed");
      await eventually(off, (entries) => {
        expect(
          entries.find((e) => e.protocol === ConnectionProtocol.TCP && e.address === allowedIp && e.port === SINK_PORT),
        ).toMatchObject({ verdict: ConnectionVerdict.DENIED, list: "internet-off" });
      });
      await eventually(on, (entries) => {
        expect(
          entries.find(
            (e) => e.protocol === ConnectionProtocol.TCP && e.address === net.privateIp && e.port === SINK_PORT,
          ),
        ).toMatchObject({ verdict: ConnectionVerdict.DENIED, list: "platform" });
      });
      expect(await net.leakedPackets()).toBe(0);
    } finally {
      await agent.client.destroySandbox({ sandboxId: off }).catch(() => {});
      await agent.client.destroySandbox({ sandboxId: on }).catch(() => {});
    }
  });
});
