import { randomBytes } from "node:crypto";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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
import { GUEST_CA, guestScript, parseGuestResults, succeeded } from "../helpers/egress-guest.js";
import { startTestInternet, type TestInternet } from "../helpers/test-internet.js";

/**
 * A guest flooding the agent's egress services from inside a real sandbox (namespace runtime): DNS
 * questions for random names as fast as it can send them (to 8.8.8.8, which the slot DNATs to the agent's
 * resolver) and as many idle connections to port 443 as it can open (each held in the proxy's peek).
 * Meanwhile the agent's /health answers promptly, a second sandbox with the same policy resolves and
 * fetches over HTTPS, and the agent's descriptors stay within the proxy's and resolver's caps. Every
 * The bound that makes this hold is the slot's rate limit on UDP questions to the resolver (200/s, burst
 * 400, agent/network/rules.ts): without it the flood overflows the resolver's one UDP socket and the
 * other sandbox's questions are lost with the flood's. Every
 * packet goes to the agent or into the test's own netns (the default-route counter proves it), so the
 * test is harmless even if a bound fails.
 */

const FLOOD_SECONDS = 12;

/** Runs in the hostile guest: a UDP question flood and a TCP connection hoard, then prints what it did. */
const FLOODER = `
import json, random, resource, socket, struct, sys, threading, time
ip, seconds = sys.argv[1], float(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
end = time.time() + seconds
held, failed = [], [0]
def hoard():
    while time.time() < end and len(held) < 3000:
        try:
            s = socket.create_connection((ip, 443), timeout=1)
            held.append(s)
        except Exception:
            failed[0] += 1
            time.sleep(0.01)
threading.Thread(target=hoard, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setblocking(False)
sent = answers = attempts = 0
while time.time() < end:
    attempts += 1
    label = b"f%08x" % random.getrandbits(32)
    name = b"".join(bytes([len(p)]) + p for p in (label, b"example", b"test")) + b"\\0"
    msg = struct.pack(">HHHHHH", sent & 0xffff, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1)
    try:
        u.sendto(msg, ("8.8.8.8", 53)); sent += 1
    except BlockingIOError:
        time.sleep(0.001)
    except OSError:
        pass  # EPERM: the slot's rate limit dropped it
    try:
        while True:
            u.recv(4096); answers += 1
    except (BlockingIOError, OSError):
        pass
print(json.dumps({"attempts": attempts, "sent": sent, "answers": answers, "held": len(held), "failed": failed[0]}))
`;

describe("a guest flooding the agent's resolver and proxy (namespace runtime)", () => {
  let agent: AgentProcess;
  let net: TestInternet;
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  const policy = { allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] };

  beforeAll(async () => {
    requireRoot();
    await requireImage();
    const ipForward = await readFile("/proc/sys/net/ipv4/ip_forward", "utf8");
    cleanups.push(() => writeFile("/proc/sys/net/ipv4/ip_forward", ipForward));
    net = await startTestInternet();
    cleanups.push(() => net.stop());
    const netPrefix = `h${randomBytes(2).toString("hex")}`;
    const netCidr = await freeSlotRange();
    await net.captureSlots(Array.from({ length: 8 }, (_, i) => `${netPrefix}-${i}h`));
    await net.watchSlots(netCidr);
    agent = await startAgentProcess({
      runtime: "namespace",
      namespaceOnly: true,
      rootDir: IMAGES_ROOT,
      netPrefix,
      netCidr,
      env: {
        ...net.agentEnv,
      },
    });
    cleanups.push(() => agent.stop());
  });

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => {});
  });

  async function healthMs(): Promise<number> {
    const started = performance.now();
    const res = await fetch(`${agent.url}/health`, { signal: AbortSignal.timeout(10_000) });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    return performance.now() - started;
  }

  const agentFds = async () => (await readdir(`/proc/${agent.pid}/fd`)).length;

  it("keeps /health and another sandbox's egress working, and its descriptors bounded", async () => {
    const hostile = newSandboxId();
    const friendly = newSandboxId();
    for (const id of [hostile, friendly]) {
      await agent.client.createSandbox({ sandboxId: id, template: TEMPLATE, internetAccess: true, network: policy });
    }
    await agent.client.exec({
      sandboxId: friendly,
      cmd: "/bin/bash",
      args: ["-c", `cat > ${GUEST_CA} <<'EOF'\n${net.caPem}\nEOF`],
    });
    const fetchFromFriendly = async () => {
      const run = await agent.client.exec({
        sandboxId: friendly,
        cmd: "/bin/bash",
        args: ["-c", guestScript({ https: { curl: ["https://b.example.test/"] } }, 5)],
      });
      return parseGuestResults(text(run.stdout)).https;
    };
    // Before the flood: the friendly sandbox's egress works.
    const before = await fetchFromFriendly();
    expect(succeeded(before), JSON.stringify(before)).toBe(true);
    const fdsBefore = await agentFds();
    const a = net.ipOf("a.example.test");
    const flooding = agent.client.exec({
      sandboxId: hostile,
      cmd: "python3",
      args: ["-c", FLOODER, a, String(FLOOD_SECONDS)],
    });
    // Let the flood build up, then measure while it runs.
    await new Promise((r) => setTimeout(r, 3000));
    const health: number[] = [];
    let peakFds = 0;
    const friendlyResults = [];
    const deadline = Date.now() + (FLOOD_SECONDS - 5) * 1000;
    while (Date.now() < deadline) {
      health.push(await healthMs());
      peakFds = Math.max(peakFds, await agentFds());
      friendlyResults.push(await fetchFromFriendly());
    }
    const flood = JSON.parse(text((await flooding).stdout)) as {
      attempts: number;
      sent: number;
      answers: number;
      held: number;
      failed: number;
    };

    // The flood was real: thousands of questions, and more connections opened than the proxy keeps.
    expect(flood.attempts).toBeGreaterThan(5000);
    expect(flood.held).toBeGreaterThan(100);
    // The agent answered its health check promptly throughout.
    expect(health.length).toBeGreaterThan(0);
    expect(Math.max(...health)).toBeLessThan(2000);
    // The other sandbox resolved b.example.test and fetched it over HTTPS, every time.
    expect(friendlyResults.length).toBeGreaterThan(0);
    for (const r of friendlyResults) expect(succeeded(r), JSON.stringify(r)).toBe(true);
    // Descriptors: the proxy's per-sandbox cap (1,024) and the resolver's in-flight share (128), not the flood.
    expect(peakFds - fdsBefore).toBeLessThan(1024 + 128 + 200);
    // The slot's own rate limit on questions to the shared resolver did the dropping, not the agent's socket.
    const netns = `${agent.netPrefix}-${(await readState(agent, hostile)).slot?.index}`;
    const counter = await execa("ip", [
      "netns",
      "exec",
      netns,
      "nft",
      "list",
      "counter",
      "inet",
      "wrenn",
      "dns_dropped",
    ]);
    expect(Number(/packets (\d+)/.exec(counter.stdout)?.[1] ?? "0")).toBeGreaterThan(0);
    if (process.env.WRENN_TEST_PRINT)
      console.log(JSON.stringify({ flood, health, peakFds, fdsBefore, counter: counter.stdout }));
    // Nothing left the machine.
    expect(await net.leakedPackets()).toBe(0);
    await Promise.all([hostile, friendly].map((id) => agent.client.destroySandbox({ sandboxId: id })));
  });
});
