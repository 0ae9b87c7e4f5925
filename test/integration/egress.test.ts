import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { ALL_TRAFFIC, Sandbox, type SandboxOpts } from "e2b";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { NodeEdge } from "../../edge/node.js";
import { IMAGES_ROOT, requireImage, requireRoot } from "../helpers/agent-fixtures.js";
import {
  type AgentProcess,
  freePort,
  freeSlotRange,
  startAgentProcess,
  suiteRuntime,
} from "../helpers/agent-process.js";
import { newTeamKey, sdkTestLogger, startEdgeForAgent } from "../helpers/edge-stack.js";
import {
  GUEST_CA,
  type GuestAttempt,
  type GuestResult,
  guestScript,
  measureUpdateEffect,
  parseGuestResults,
  succeeded,
} from "../helpers/egress-guest.js";
import { startTestInternet, type TestInternet } from "../helpers/test-internet.js";

/**
 * Acceptance for issue 20 (egress policy), end to end: the official e2b SDK through a Node edge, a real
 * agent (the suite's runtime: namespace, or gVisor in the integration-gvisor project) and the real guest
 * image, against a whole fake internet on this machine (test/helpers/test-internet.ts): test hosts on
 * stand-in public addresses in a netns this file creates, a DNS server answering a.example.test,
 * b.example.test and forbidden.test (and rebind.example.test with a private address), HTTP and HTTPS
 * under a test CA the guest is given. The agent resolves through that DNS server (AGENT_DNS_UPSTREAM) and
 * every slot's egress is routed into the test netns; a counter on the host's default route proves
 * that nothing left the machine. The connection log is read through GET /v1/sandboxes/{id}/connections.
 */

const runtime = suiteRuntime();
const adminKey = `wrn_egress_admin_${randomBytes(16).toString("hex")}`;
/** Slots of a /23 (AGENT_NET_CIDR): all captured into the test netns before the agent starts. */
const SLOTS = 128;

interface Connection {
  seq: number;
  time: string;
  protocol: "tcp" | "udp" | "dns";
  address: string | null;
  port: number;
  name: string | null;
  nameSource: "dns" | "sni" | "host" | null;
  verdict: "allowed" | "denied";
  rule: string;
  list: string;
  bytesOut: number | null;
  bytesIn: number | null;
  endedAt: string | null;
}

/** An agent (its own slot range, every slot captured) and a Node edge in front of it, with a team key. */
interface Stack {
  agent: AgentProcess;
  edge: NodeEdge;
  teamKey: string;
  /** What the official SDK is given (no process-wide E2B_* variables: two stacks run in this file). */
  sdk: { apiKey: string; apiUrl: string; sandboxUrl: string };
}

let net: TestInternet | undefined;
const stacks: Stack[] = [];
let main: Stack | undefined;
const sandboxes: Sandbox[] = [];
/** Uploaded by the upload case (its bytes must show in the log). */
const UPLOAD_BYTES = 100_000;

function internet(): TestInternet {
  if (!net) throw new Error("test internet not started");
  return net;
}

function mainStack(): Stack {
  if (!main) throw new Error("stack not started");
  return main;
}

/** Free ports for the agent's egress proxy (HTTP, TLS) and resolver. */
async function egressPorts(): Promise<Record<string, string>> {
  const [http, tls, dns] = [await freePort(), await freePort(), await freePort()];
  return { AGENT_EGRESS_HTTP_PORT: String(http), AGENT_EGRESS_TLS_PORT: String(tls), AGENT_DNS_PORT: String(dns) };
}

async function startStack(env: Record<string, string> = {}): Promise<Stack> {
  const n = internet();
  const netPrefix = `e${randomBytes(2).toString("hex")}`;
  const netCidr = await freeSlotRange();
  // Every slot this agent can make sends its egress into the test netns, and nothing else.
  await n.captureSlots(Array.from({ length: SLOTS }, (_, i) => `${netPrefix}-${i}h`));
  await n.watchSlots(netCidr);
  const agent = await startAgentProcess({
    runtime: "namespace",
    rootDir: IMAGES_ROOT,
    netPrefix,
    netCidr,
    env: {
      AGENT_EGRESS: "on",
      AGENT_DNS_UPSTREAM: n.dnsUpstream,
      // Ports of its own, so another test's agent on this machine cannot clash with it.
      ...(await egressPorts()),
      ...env,
    },
  });
  try {
    const edge = await startEdgeForAgent(agent, {
      adminKey,
      env: { WRENN_RECONCILE_INTERVAL_SEC: "0" },
      logger: sdkTestLogger(),
    });
    const teamKey = await newTeamKey(edge, adminKey, "egress", `egress-${randomBytes(3).toString("hex")}`);
    const stack = { agent, edge, teamKey, sdk: { apiKey: teamKey, apiUrl: edge.url, sandboxUrl: edge.url } };
    stacks.push(stack);
    return stack;
  } catch (err) {
    await agent.stop().catch(() => {});
    throw err;
  }
}

async function create(opts: SandboxOpts = {}, stack: Stack = mainStack()): Promise<Sandbox> {
  const sbx = await Sandbox.create({ timeoutMs: 600_000, ...stack.sdk, ...opts });
  sandboxes.push(sbx);
  await sbx.files.write(GUEST_CA, internet().caPem);
  await sbx.files.write("/tmp/upload.bin", new Uint8Array(UPLOAD_BYTES).fill(0x75).buffer);
  return sbx;
}

/** Runs the attempts in the sandbox at once and returns each one's result. */
async function attempt(
  sbx: Sandbox,
  attempts: Record<string, GuestAttempt>,
  connectTimeoutSec = 3,
): Promise<Record<string, GuestResult>> {
  const run = await sbx.commands.run(guestScript(attempts, connectTimeoutSec), { timeoutMs: 60_000 });
  const results = parseGuestResults(run.stdout);
  for (const label of Object.keys(attempts))
    if (!results[label]) throw new Error(`no result for ${label}: ${run.stdout}`);
  return results;
}

const curl = (...args: string[]): GuestAttempt => ({ curl: args });
const tcp = (host: string, port: number): GuestAttempt => ({ tcp: { host, port } });

/** What the test server said it was asked (its JSON answer). */
function asked(result: GuestResult | undefined): Record<string, unknown> {
  try {
    return JSON.parse(result?.body ?? "") as Record<string, unknown>;
  } catch {
    return {};
  }
}

async function connectionLog(sandboxId: string, query = "", stack: Stack = mainStack()): Promise<Connection[]> {
  const all: Connection[] = [];
  let after = 0;
  for (let page = 0; page < 100; page++) {
    const res = await fetch(
      `${stack.edge.url}/v1/sandboxes/${sandboxId}/connections?limit=1000&after=${after}${query}`,
      {
        headers: { "x-api-key": stack.teamKey },
      },
    );
    if (res.status !== 200) throw new Error(`connections: ${res.status} ${await res.text()}`);
    const body = (await res.json()) as { connections: Connection[]; nextAfter: number | null };
    all.push(...body.connections);
    if (body.nextAfter === null || body.connections.length === 0) break;
    after = body.nextAfter;
  }
  return all;
}

/** Polls the log until `check` passes (entries are completed, with bytes, when their connection closes). */
async function eventuallyLog(
  sandboxId: string,
  check: (log: Connection[]) => void,
  stack: Stack = mainStack(),
  timeoutMs = 10_000,
) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const log = await connectionLog(sandboxId, "", stack);
    try {
      check(log);
      return log;
    } catch (err) {
      if (Date.now() > deadline) {
        throw new Error(`${(err as Error).message}\nlog:\n${log.map((e) => JSON.stringify(e)).join("\n")}`);
      }
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

const find = (log: Connection[], match: Partial<Connection>) =>
  log.find((e) => Object.entries(match).every(([k, v]) => e[k as keyof Connection] === v));

/** The default-route counter: nothing of ours left the machine. */
async function expectNothingLeft(): Promise<void> {
  expect(await internet().leakedPackets()).toBe(0);
}

const ok = (r: GuestResult | undefined) => succeeded(r);
const show = (results: Record<string, GuestResult>) => JSON.stringify(results, null, 1);

/** The host's forwarding switch before the agents turned it on (egress on), put back at the end. */
let ipForward: string | undefined;

beforeAll(async () => {
  requireRoot();
  await requireImage();
  ipForward = await readFile("/proc/sys/net/ipv4/ip_forward", "utf8");
  net = await startTestInternet({ extraRecords: { "rebind.example.test": ["10.1.2.3"] } });
  main = await startStack();
}, 180_000);

afterEach(async () => {
  await Promise.allSettled(sandboxes.splice(0).map((s) => s.kill()));
});

afterAll(async () => {
  for (const stack of stacks.splice(0)) {
    await stack.edge.close().catch(() => {});
    await stack.agent.stop().catch(() => {});
  }
  const leaked = await net?.leakedPackets().catch(() => Number.NaN);
  await net?.stop();
  if (ipForward !== undefined) await writeFile("/proc/sys/net/ipv4/ip_forward", ipForward);
  // Checked once more over the whole file, after every sandbox is gone.
  expect(leaked).toBe(0);
}, 120_000);

/** Deny all + allow one IP (b's): only that address, on every port; nothing reaches `a`. */
async function denyAllButOne(stack: Stack, inspected: boolean): Promise<void> {
  const n = internet();
  const b = n.ipOf("b.example.test");
  const a = n.ipOf("a.example.test");
  const sbx = await create({ network: { denyOut: [ALL_TRAFFIC], allowOut: [b] } }, stack);
  const before = n.events().length;
  const info = await sbx.getInfo();
  expect(info.network).toMatchObject({ allowOut: [b], denyOut: [ALL_TRAFFIC] });
  const seen = await attempt(sbx, {
    allowedHttp: curl(`http://${b}/`),
    allowedHttps: curl("--resolve", `b.example.test:443:${b}`, "https://b.example.test/"),
    allowedTcp: tcp(b, n.tcpPort),
    otherHttp: curl(`http://${a}/`),
    otherHttps: curl("--resolve", `a.example.test:443:${a}`, "https://a.example.test/"),
    otherTcp: tcp(a, n.tcpPort),
    privateHost: curl(`http://${n.privateIp}/`),
    byName: curl("http://a.example.test/"),
  });
  expect(
    {
      allowedHttp: ok(seen.allowedHttp),
      allowedHttps: ok(seen.allowedHttps),
      allowedTcp: ok(seen.allowedTcp),
      otherHttp: ok(seen.otherHttp),
      otherHttps: ok(seen.otherHttps),
      otherTcp: ok(seen.otherTcp),
      privateHost: ok(seen.privateHost),
      byName: ok(seen.byName),
    },
    show(seen),
  ).toEqual({
    allowedHttp: true,
    allowedHttps: true,
    allowedTcp: true,
    otherHttp: false,
    otherHttps: false,
    otherTcp: false,
    privateHost: false,
    byName: false,
  });
  expect(asked(seen.allowedHttp)).toMatchObject({ address: b });
  // The test host never saw the denied ones.
  expect(
    n
      .events()
      .slice(before)
      .filter((e) => e.kind !== "dns" && e.address === a),
  ).toEqual([]);
  if (inspected) {
    // The agent saw 80/443 (proxy) and DNS (resolver): every denial is in the log, with its rule.
    await eventuallyLog(
      sbx.sandboxId,
      (log) => {
        const denied = { verdict: "denied", rule: ALL_TRAFFIC, list: "denyOut" } as const;
        expect(find(log, { protocol: "tcp", address: a, port: 80, ...denied })).toBeDefined();
        expect(find(log, { protocol: "tcp", address: a, port: 443, name: "a.example.test", ...denied })).toBeDefined();
        expect(find(log, { protocol: "dns", name: "a.example.test", ...denied })).toBeDefined();
        expect(log.filter((e) => e.verdict === "allowed" && e.address === a)).toEqual([]);
      },
      stack,
    );
  } else {
    // Without inspection an address-only policy is the kernel's alone (AGENT_EGRESS_INSPECT=policy):
    // the agent sees none of these connections, and the log says nothing was let through to `a`.
    const log = await connectionLog(sbx.sandboxId, "", stack);
    expect(log.filter((e) => e.verdict === "allowed" && e.address === a)).toEqual([]);
  }
  await expectNothingLeft();
}

describe(`egress policy (${runtime})`, () => {
  it("a sandbox with no rules behaves as today: internet on reaches every test host, off reaches none", async () => {
    const n = internet();
    const a = n.ipOf("a.example.test");
    const other = n.unnamed[0] ?? "";
    const open = await create();
    expect((await open.getInfo()).network?.allowOut ?? []).toEqual([]);
    const seen = await attempt(open, {
      ip: curl(`http://${a}/`),
      name: curl("https://a.example.test/"),
      forbidden: curl("https://forbidden.test/"),
      unnamed: curl(`http://${other}/`),
      rawTcp: tcp(other, n.tcpPort),
    });
    expect(ok(seen.ip) && ok(seen.name) && ok(seen.forbidden) && ok(seen.unnamed) && ok(seen.rawTcp), show(seen)).toBe(
      true,
    );
    expect(asked(seen.name)).toMatchObject({ address: a, sni: "a.example.test" });

    const closed = await create({ allowInternetAccess: false });
    const none = await attempt(closed, {
      ip: curl(`http://${a}/`),
      unnamed: curl(`http://${other}/`),
      rawTcp: tcp(other, n.tcpPort),
    });
    expect([ok(none.ip), ok(none.unnamed), ok(none.rawTcp)], show(none)).toEqual([false, false, false]);
    await expectNothingLeft();
  });

  it("deny all + allow one IP: only that address, on every port", async () => {
    await denyAllButOne(mainStack(), false);
  });

  it("allow *.example.test only: names by DNS, SNI and Host; a forbidden SNI or Host on an allowed IP is refused; all logged", async () => {
    const n = internet();
    const a = n.ipOf("a.example.test");
    const b = n.ipOf("b.example.test");
    const other = n.unnamed[0] ?? "";
    const sbx = await create({ network: { allowOut: ["*.example.test"], denyOut: [ALL_TRAFFIC] } });
    const before = n.events().length;
    const seen = await attempt(sbx, {
      httpsByName: curl("https://a.example.test/"),
      httpByName: curl("http://b.example.test/"),
      download: curl("https://a.example.test/bytes/300000"),
      upload: curl("--data-binary", "@/tmp/upload.bin", "https://b.example.test/echo"),
      otherPortByName: tcp("a.example.test", n.tcpPort),
      directIpHttp: curl(`http://${other}/`),
      directIpHttps: curl("-k", `https://${other}/`),
      directIpTcp: tcp(other, n.tcpPort),
      forbiddenSni: curl("--resolve", `forbidden.test:443:${a}`, "https://forbidden.test/"),
      forbiddenHost: curl("--resolve", `forbidden.test:80:${a}`, "http://forbidden.test/"),
      forbiddenDns: curl("https://forbidden.test/"),
      unknownDns: curl("https://nowhere.example.test/"),
      rebinding: curl("http://rebind.example.test/"),
      privateByName: curl("--resolve", `a.example.test:80:${n.privateIp}`, "http://a.example.test/"),
    });
    const verdicts = Object.fromEntries(Object.entries(seen).map(([k, v]) => [k, ok(v)]));
    expect(verdicts, show(seen)).toEqual({
      httpsByName: true,
      httpByName: true,
      download: true,
      upload: true,
      otherPortByName: true,
      directIpHttp: false,
      directIpHttps: false,
      directIpTcp: false,
      forbiddenSni: false,
      forbiddenHost: false,
      forbiddenDns: false,
      unknownDns: false,
      rebinding: false,
      privateByName: false,
    });
    expect(asked(seen.httpsByName)).toMatchObject({ address: a, port: 443, sni: "a.example.test" });
    expect(asked(seen.httpByName)).toMatchObject({ address: b, port: 80, host: "b.example.test" });
    expect(seen.otherPortByName?.body).toContain(`tcp-ok ${a}`);
    // A name the policy forbids is not even resolved (the resolver answers REFUSED): curl exit 6.
    expect(seen.forbiddenDns?.rc, show(seen)).toBe(6);
    // Refused by the proxy, never forwarded: the test hosts saw no forbidden name and nothing for `other`.
    const after = n.events().slice(before);
    expect(
      after.filter((e) => e.kind === "http" && (e.sni === "forbidden.test" || e.host === "forbidden.test")),
    ).toEqual([]);
    expect(after.filter((e) => e.kind !== "dns" && e.address === other)).toEqual([]);
    // The agent asked the test DNS server for the allowed names only.
    const questions = after.filter((e) => e.kind === "dns").map((e) => (e.kind === "dns" ? e.name : ""));
    expect(questions).toContain("a.example.test");
    expect(questions).not.toContain("forbidden.test");

    const log = await eventuallyLog(sbx.sandboxId, (entries) => {
      const download = entries.find(
        (e) => e.port === 443 && e.name === "a.example.test" && e.verdict === "allowed" && (e.bytesIn ?? 0) >= 300_000,
      );
      expect(download, "the download's entry with its bytes").toBeDefined();
      const upload = entries.find(
        (e) =>
          e.port === 443 && e.name === "b.example.test" && e.verdict === "allowed" && (e.bytesOut ?? 0) >= UPLOAD_BYTES,
      );
      expect(upload, "the upload's entry with its bytes").toBeDefined();
      expect(
        find(entries, {
          protocol: "tcp",
          address: a,
          port: 443,
          name: "a.example.test",
          nameSource: "sni",
          verdict: "allowed",
          rule: "*.example.test",
          list: "allowOut",
        }),
      ).toBeDefined();
      expect(
        find(entries, {
          protocol: "tcp",
          address: b,
          port: 80,
          name: "b.example.test",
          nameSource: "host",
          verdict: "allowed",
          rule: "*.example.test",
        }),
      ).toBeDefined();
      expect(
        find(entries, { protocol: "dns", name: "a.example.test", verdict: "allowed", rule: "*.example.test" }),
      ).toBeDefined();
      expect(
        find(entries, {
          protocol: "dns",
          name: "forbidden.test",
          verdict: "denied",
          rule: ALL_TRAFFIC,
          list: "denyOut",
        }),
      ).toBeDefined();
      expect(
        find(entries, {
          protocol: "tcp",
          address: a,
          port: 443,
          name: "forbidden.test",
          nameSource: "sni",
          verdict: "denied",
        }),
      ).toBeDefined();
      expect(
        find(entries, {
          protocol: "tcp",
          address: a,
          port: 80,
          name: "forbidden.test",
          nameSource: "host",
          verdict: "denied",
        }),
      ).toBeDefined();
      expect(find(entries, { protocol: "tcp", address: other, port: 80, verdict: "denied" })).toBeDefined();
      expect(find(entries, { protocol: "tcp", address: other, port: 443, verdict: "denied" })).toBeDefined();
    });
    // Every allowed 80/443 entry that ended carries bytes both ways; denials carry none in.
    for (const e of log.filter((x) => x.protocol === "tcp" && x.verdict === "allowed" && x.endedAt !== null)) {
      expect(e.bytesIn ?? 0, JSON.stringify(e)).toBeGreaterThan(0);
      expect(e.bytesOut ?? 0, JSON.stringify(e)).toBeGreaterThan(0);
    }
    for (const e of log.filter((x) => x.verdict === "denied")) expect(e.bytesIn ?? 0, JSON.stringify(e)).toBe(0);
    // Filters and cursor.
    const denied = await connectionLog(sbx.sandboxId, "&verdict=denied");
    expect(denied.length).toBeGreaterThan(0);
    expect(denied.every((e) => e.verdict === "denied")).toBe(true);
    const dns = await connectionLog(sbx.sandboxId, "&protocol=dns");
    expect(dns.every((e) => e.protocol === "dns")).toBe(true);
    const firstPage = await fetch(`${mainStack().edge.url}/v1/sandboxes/${sbx.sandboxId}/connections?limit=2`, {
      headers: { "x-api-key": mainStack().teamKey },
    });
    const page = (await firstPage.json()) as { connections: Connection[]; nextAfter: number | null };
    expect(page.connections.length).toBe(2);
    expect(page.nextAfter).toBe(page.connections[1]?.seq);
    // The stream starts with what is already there.
    const abort = new AbortController();
    const stream = await fetch(`${mainStack().edge.url}/v1/sandboxes/${sbx.sandboxId}/connections/stream?after=0`, {
      headers: { "x-api-key": mainStack().teamKey },
      signal: abort.signal,
    });
    expect(stream.status).toBe(200);
    const reader = stream.body?.getReader();
    const first = await reader?.read();
    abort.abort();
    const line = new TextDecoder().decode(first?.value).split("\n")[0] ?? "";
    expect((JSON.parse(line) as Connection).seq).toBeGreaterThan(0);

    // The log is still there after the sandbox ended.
    await sbx.kill();
    const kept = await connectionLog(sbx.sandboxId);
    expect(kept.length).toBeGreaterThanOrEqual(log.length);
    await expectNothingLeft();
  });

  it("rules changed while the sandbox runs take effect within a second (SDK updateNetwork)", async () => {
    const n = internet();
    const a = n.ipOf("a.example.test");
    const sbx = await create({ network: { denyOut: [ALL_TRAFFIC] } });
    const closed = await attempt(sbx, { ip: curl(`http://${a}/`), tcp7000: tcp(a, n.tcpPort) });
    expect([ok(closed.ip), ok(closed.tcp7000)], show(closed)).toEqual([false, false]);

    // A loop in the guest notes when the first attempt got through; the update must be seen within 1 s.
    const effect = await measureUpdateEffect(
      async (command) => (await sbx.commands.run(command)).stdout,
      a,
      80,
      () => sbx.updateNetwork({ allowOut: [a], denyOut: [ALL_TRAFFIC] }),
    );
    expect(
      effect.afterAnswerMs,
      `ms from the update's answer to the first connection through (${JSON.stringify(effect)})`,
    ).toBeLessThan(1_000);
    expect((await sbx.getInfo()).network).toMatchObject({ allowOut: [a], denyOut: [ALL_TRAFFIC] });
    const opened = await attempt(sbx, { ip: curl(`http://${a}/`), tcp7000: tcp(a, n.tcpPort) }, 1);
    expect([ok(opened.ip), ok(opened.tcp7000)], show(opened)).toEqual([true, true]);

    // Domains instead, then a narrower domain: a.example.test stops resolving and its SNI is refused.
    await sbx.updateNetwork({ allowOut: ["*.example.test"], denyOut: [ALL_TRAFFIC] });
    const wide = await attempt(sbx, { a: curl("https://a.example.test/"), ip: curl(`http://${n.unnamed[0]}/`) }, 1);
    expect([ok(wide.a), ok(wide.ip)], show(wide)).toEqual([true, false]);
    await sbx.updateNetwork({ allowOut: ["b.example.test"], denyOut: [ALL_TRAFFIC] });
    const narrow = await attempt(
      sbx,
      {
        b: curl("https://b.example.test/"),
        aByName: curl("https://a.example.test/"),
        aBySni: curl("--resolve", `a.example.test:443:${a}`, "https://a.example.test/"),
      },
      1,
    );
    expect([ok(narrow.b), ok(narrow.aByName), ok(narrow.aBySni)], show(narrow)).toEqual([true, false, false]);

    // Cleared (omitted lists are cleared): today's behaviour again, internet on.
    await sbx.updateNetwork({});
    const cleared = await attempt(sbx, { a: curl(`http://${a}/`), other: tcp(n.unnamed[0] ?? "", n.tcpPort) }, 1);
    expect([ok(cleared.a), ok(cleared.other)], show(cleared)).toEqual([true, true]);
    expect((await sbx.getInfo()).network?.allowOut ?? []).toEqual([]);

    // And closed again through Wrenn's own API, internet switch included.
    const put = await fetch(`${mainStack().edge.url}/v1/sandboxes/${sbx.sandboxId}/network`, {
      method: "PUT",
      headers: { "x-api-key": mainStack().teamKey, "content-type": "application/json" },
      body: JSON.stringify({ allowOut: [], denyOut: [], internetAccess: false }),
    });
    expect(put.status).toBeLessThan(300);
    const off = await attempt(sbx, { a: curl(`http://${a}/`) }, 1);
    expect(ok(off.a), show(off)).toBe(false);
    await expectNothingLeft();
  });

  it("a policy cannot open the platform's blocked ranges, and a wrong rule is refused with a clear error", async () => {
    const n = internet();
    const network = { allowOut: [n.privateIp, "10.0.0.0/8", "*.example.test"], denyOut: [ALL_TRAFFIC] };
    // The API may refuse such rules outright; if it takes them, they must not open anything.
    let sbx: Sandbox;
    try {
      sbx = await create({ network });
    } catch (err) {
      expect(String(err)).toMatch(/10\.0\.0\.0\/8|private|blocked|172\./i);
      sbx = await create({ network: { allowOut: ["*.example.test"], denyOut: [ALL_TRAFFIC] } });
    }
    const seen = await attempt(sbx, {
      privateIp: curl(`http://${n.privateIp}/`),
      privateTcp: tcp(n.privateIp, n.tcpPort),
      metadata: curl("http://169.254.169.254/"),
      rebinding: curl("http://rebind.example.test/"),
    });
    expect(Object.values(seen).map(ok), show(seen)).toEqual([false, false, false, false]);
    await expect(Sandbox.create({ ...mainStack().sdk, network: { allowOut: ["not a rule!"] } })).rejects.toThrow(
      /not a rule/,
    );
    await expectNothingLeft();
  });
});

describe(`egress policy with AGENT_EGRESS_INSPECT=always (${runtime})`, () => {
  let inspecting: Stack | undefined;

  beforeAll(async () => {
    inspecting = await startStack({ AGENT_EGRESS_INSPECT: "always" });
  }, 180_000);

  it("deny all + allow one IP: the same verdicts, and every denied 80/443 connection and DNS question is logged", async () => {
    if (!inspecting) throw new Error("stack not started");
    await denyAllButOne(inspecting, true);
  });
});

describe(`egress policy on an agent with AGENT_EGRESS=off (${runtime})`, () => {
  let closed: Stack | undefined;

  beforeAll(async () => {
    closed = await startStack({ AGENT_EGRESS: "off" });
  }, 180_000);

  it("as today, no sandbox reaches out, with or without rules (a policy opens nothing the host keeps shut)", async () => {
    if (!closed) throw new Error("stack not started");
    const n = internet();
    const a = n.ipOf("a.example.test");
    const plain = await create({}, closed);
    const ruled = await create({ network: { allowOut: [a, "*.example.test"] } }, closed);
    for (const sbx of [plain, ruled]) {
      const seen = await attempt(sbx, {
        ip: curl(`http://${a}/`),
        name: curl("https://a.example.test/"),
        rawTcp: tcp(a, n.tcpPort),
      });
      expect([ok(seen.ip), ok(seen.name), ok(seen.rawTcp)], show(seen)).toEqual([false, false, false]);
    }
    await expectNothingLeft();
  });
});
