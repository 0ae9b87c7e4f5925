import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConnectionVerdict } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { type AgentProcess, freeSlotRange, startAgentProcess } from "../helpers/agent-process.js";
import {
  GUEST_CA,
  type GuestAttempt,
  type GuestResult,
  guestScript,
  parseGuestResults,
  succeeded,
} from "../helpers/egress-guest.js";
import { IMAGES_ROOT, newSandboxId, QEMU_AGENT_ENV, qemuAgentSkipReason } from "../helpers/qemu-helpers.js";
import { startTestInternet, type TestInternet } from "../helpers/test-internet.js";

/**
 * Issue 20's egress policy on a VM (the qemu runtime, TCG here): the same semantics as namespace and
 * gVisor (test/integration/egress.test.ts), where the guest's packets come in on the slot's TAP and the
 * policy's redirections sit in prerouting. Driven through the agent's own API (no edge: one slow boot is
 * enough), against the fake internet of test/helpers/test-internet.ts; nothing leaves the machine.
 */

const skip = qemuAgentSkipReason();
const ALL_TRAFFIC = "0.0.0.0/0";

describe.skipIf(skip !== undefined)(`egress policy on a qemu VM${skip ? ` (skipped: ${skip})` : ""}`, () => {
  let net: TestInternet | undefined;
  let agent: AgentProcess | undefined;
  let ipForward: string | undefined;

  beforeAll(async () => {
    ipForward = await readFile("/proc/sys/net/ipv4/ip_forward", "utf8");
    net = await startTestInternet({ extraRecords: { "rebind.example.test": ["10.1.2.3"] } });
    const netPrefix = `v${randomBytes(2).toString("hex")}`;
    const netCidr = await freeSlotRange();
    await net.captureSlots(Array.from({ length: 128 }, (_, i) => `${netPrefix}-${i}h`));
    await net.watchSlots(netCidr);
    agent = await startAgentProcess({
      runtime: "qemu",
      rootDir: IMAGES_ROOT,
      netPrefix,
      netCidr,
      env: {
        ...QEMU_AGENT_ENV,
        ...net.agentEnv,
      },
    });
  });

  afterAll(async () => {
    await agent?.stop().catch(() => {});
    const leaked = await net?.leakedPackets().catch(() => Number.NaN);
    await net?.stop();
    // Egress on makes the agent switch on forwarding; put the host's setting back.
    if (ipForward !== undefined) await writeFile("/proc/sys/net/ipv4/ip_forward", ipForward);
    if (net) expect(leaked).toBe(0);
  });

  it("allow *.example.test only, then one more address while it runs; all in the log", async () => {
    if (!agent || !net) throw new Error("not started");
    const { client } = agent;
    const n = net;
    const a = n.ipOf("a.example.test");
    const other = n.unnamed[0] ?? "";
    const id = newSandboxId();
    await client.createSandbox({
      sandboxId: id,
      template: "minimal",
      timeoutSec: 1800,
      internetAccess: true,
      network: { allowOut: ["*.example.test"], denyOut: [ALL_TRAFFIC] },
    });
    await client.writeFile({ sandboxId: id, path: GUEST_CA, content: new TextEncoder().encode(n.caPem) });
    const attempt = async (attempts: Record<string, GuestAttempt>): Promise<Record<string, GuestResult>> => {
      const res = await client.exec({
        sandboxId: id,
        cmd: "/bin/bash",
        args: ["-c", guestScript(attempts, 5, 3)],
        timeoutSec: 240,
      });
      return parseGuestResults(new TextDecoder().decode(res.stdout));
    };
    const seen = await attempt({
      httpsByName: { curl: ["https://a.example.test/"] },
      httpByName: { curl: ["http://b.example.test/"] },
      otherPortByName: { tcp: { host: "a.example.test", port: n.tcpPort } },
      directIpHttp: { curl: [`http://${other}/`] },
      directIpTcp: { tcp: { host: other, port: n.tcpPort } },
      forbiddenSni: { curl: ["--resolve", `forbidden.test:443:${a}`, "https://forbidden.test/"] },
      forbiddenHost: { curl: ["--resolve", `forbidden.test:80:${a}`, "http://forbidden.test/"] },
      forbiddenDns: { curl: ["https://forbidden.test/"] },
      rebinding: { curl: ["http://rebind.example.test/"] },
      privateIp: { curl: [`http://${n.privateIp}/`] },
    });
    const verdicts = Object.fromEntries(Object.entries(seen).map(([k, v]) => [k, succeeded(v)]));
    expect(verdicts, JSON.stringify(seen, null, 1)).toEqual({
      httpsByName: true,
      httpByName: true,
      otherPortByName: true,
      directIpHttp: false,
      directIpTcp: false,
      forbiddenSni: false,
      forbiddenHost: false,
      forbiddenDns: false,
      rebinding: false,
      privateIp: false,
    });
    expect(JSON.parse(seen.httpsByName?.body ?? "{}")).toMatchObject({ address: a, sni: "a.example.test" });

    await client.updateSandboxNetwork({
      sandboxId: id,
      network: { allowOut: ["*.example.test", other], denyOut: [ALL_TRAFFIC] },
    });
    const opened = await attempt({
      directIpHttp: { curl: [`http://${other}/`] },
      directIpTcp: { tcp: { host: other, port: n.tcpPort } },
    });
    expect([succeeded(opened.directIpHttp), succeeded(opened.directIpTcp)], JSON.stringify(opened)).toEqual([
      true,
      true,
    ]);

    const { entries } = await client.listConnections({ sandboxId: id, limit: 1000 });
    const has = (match: (e: (typeof entries)[number]) => boolean) => entries.some(match);
    const log = entries.map((e) => `${e.verdict} ${e.address}:${e.port} ${e.name} ${e.rule}`).join("\n");
    expect(
      has(
        (e) =>
          e.port === 443 &&
          e.name === "a.example.test" &&
          e.verdict === ConnectionVerdict.ALLOWED &&
          (e.bytesIn ?? 0n) > 0n,
      ),
      log,
    ).toBe(true);
    expect(
      has((e) => e.port === 443 && e.name === "forbidden.test" && e.verdict === ConnectionVerdict.DENIED),
      log,
    ).toBe(true);
    expect(
      has((e) => e.port === 80 && e.name === "forbidden.test" && e.verdict === ConnectionVerdict.DENIED),
      log,
    ).toBe(true);
    expect(
      has((e) => e.port === 53 && e.name === "forbidden.test" && e.verdict === ConnectionVerdict.DENIED),
      log,
    ).toBe(true);
    expect(
      has((e) => e.address === other && e.port === 80 && e.verdict === ConnectionVerdict.DENIED),
      log,
    ).toBe(true);
    expect(await n.leakedPackets()).toBe(0);
    await client.destroySandbox({ sandboxId: id });
  });
});
