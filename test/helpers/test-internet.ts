import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import type { DnsEvent, HttpEvent, ServerConfig, ServerEvent, TcpEvent } from "./test-internet-server.js";

/**
 * A whole little internet for egress tests, on this machine only (issue 20). One netns the test creates
 * holds every "public" test host: stand-in public addresses from 192.88.99.0/24 (the retired 6to4 relay
 * anycast, RFC 7526) on its loopback, a DNS server answering the names the test registers with those
 * addresses (NXDOMAIN otherwise), HTTP on 80 and HTTPS on 443 (one certificate for every name, signed by
 * a test CA made here with openssl) and a plain TCP service, see test-internet-server.ts.
 *
 * Two ways in, and nothing else changes in the root netns:
 * - `captureSlots` (as test-net.ts): everything arriving from the given slot host veths is routed by a
 *   policy rule whose table routes only into this netns, followed by an `unreachable` rule.
 * - `to <address>/32` policy rules for exactly the test addresses, so the agent's egress proxy and
 *   resolver, which connect from the ROOT netns to the original destination, reach the test hosts. The
 *   main table and its default route are never touched.
 * The DNS server is reached from the root netns at `dnsUpstream` (the netns's private-range address on
 * the veth, directly connected): start the agent with AGENT_DNS_UPSTREAM set to it.
 *
 * A counter (own nft table) on the host's default-route interfaces counts packets from the agent's slot
 * range (`watchSlots`) or to 192.88.99.0/24 or to the stand-in resolvers: `leakedPackets()` must stay 0.
 * `stop()` removes the netns, the veth, every ip rule, the table's routes, the nft table, the servers
 * (by PID) and the temp dir, and is safe to call after a failed start or twice.
 */

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const SERVER = fileURLToPath(new URL("./test-internet-server.ts", import.meta.url));
export const PUBLIC_STAND_IN_NET = "192.88.99";
/** Names answered by default: two allowed-by-wildcard hosts and one the tests forbid. */
export const DEFAULT_NAMES = ["a.example.test", "b.example.test", "forbidden.test"] as const;

export interface TestInternetOptions {
  /** Names the DNS server answers, each with a test host of its own. Default DEFAULT_NAMES. */
  names?: readonly string[];
  /** Test hosts with no name (reached by IP only). Default 1. */
  unnamedHosts?: number;
  /** Further DNS records pointing anywhere (e.g. a name answering a private address); never served here. */
  extraRecords?: Record<string, string[]>;
  /**
   * Addresses a guest's resolv.conf may name (wrenn-init writes 8.8.8.8 and 8.8.4.4 when the image has
   * none): put on the netns's loopback so that a captured sandbox's own DNS reaches this DNS server too.
   * Only captured slot traffic is routed here; the root netns never sends to them. Default both.
   */
  resolverAddresses?: readonly string[];
  /** TTL of the answers (s). Default 60. */
  ttl?: number;
  /** Port of the plain TCP service (not 80/443). Default 7000. */
  tcpPort?: number;
  /** Preference of the policy rules (capture at pref, its unreachable at pref+1, `to` rules at pref+2). */
  rulePref?: number;
}

export interface TestInternet {
  netns: string;
  /** Root-netns end of the veth (the source of the root netns's connections to the test hosts). */
  gatewayIp: string;
  /** The netns's end of the veth (private range, directly connected). */
  privateIp: string;
  /** `<ip>:53` of the DNS server, reachable from the root netns: the agent's AGENT_DNS_UPSTREAM. */
  dnsUpstream: string;
  /**
   * The agent settings that send sandboxes' egress here: egress on, the resolver's upstream this
   * internet's DNS server (startAgentProcess picks free ports for the proxy and the resolver).
   */
  agentEnv: Record<string, string>;
  /** The address of a named test host. */
  ipOf(name: string): string;
  /** Test hosts without a name. */
  unnamed: string[];
  /** Every test host address (192.88.99.x). */
  addresses: string[];
  /** The test CA (PEM) and its file: what the guest must trust. */
  caPem: string;
  caFile: string;
  tcpPort: number;
  events(): ServerEvent[];
  dnsQuestions(): DnsEvent[];
  httpRequests(): HttpEvent[];
  tcpConnections(): TcpEvent[];
  /** The first event (so far or within `timeoutMs`) matching; events arrive a moment after the answer. */
  waitForEvent<E extends ServerEvent>(match: (e: ServerEvent) => e is E, timeoutMs?: number): Promise<E>;
  waitForEvent(match: (e: ServerEvent) => boolean, timeoutMs?: number): Promise<ServerEvent>;
  /** Changes (or with null removes) a DNS record while running. */
  setRecord(name: string, addresses: string[] | null): Promise<void>;
  /** Sends everything that arrives from these slot host veths into the test netns. */
  captureSlots(hostVeths: readonly string[]): Promise<void>;
  /** Also counts packets from this slot range (the agent's AGENT_NET_CIDR) leaving by the default route. */
  watchSlots(cidr: string): Promise<void>;
  /** Packets counted on the default-route interfaces: must be 0. */
  leakedPackets(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Distinct random last octets in 2..250, none already routed by a `to <address>` rule: test files run
 * in parallel, each with its own test internet, and two holding the same address would route it to
 * whichever rule comes first (and one's cleanup check would see the other's rule).
 */
function pickOctets(count: number, rulesNow: string): number[] {
  const taken = (o: number) => new RegExp(`to ${PUBLIC_STAND_IN_NET.replaceAll(".", "\\.")}\\.${o}\\b`).test(rulesNow);
  const picked = new Set<number>();
  for (let tries = 0; picked.size < count; tries++) {
    const o = randomInt(2, 251);
    if (tries < 1_000 && taken(o)) continue;
    picked.add(o);
  }
  return [...picked];
}

async function defaultRouteDevices(): Promise<string[]> {
  const { stdout } = await execa("ip", ["-j", "-4", "route", "show", "default"], { reject: false });
  const routes = (JSON.parse(stdout || "[]") as { dev?: string }[]).map((r) => r.dev).filter((d) => d !== undefined);
  return [...new Set(routes)] as string[];
}

async function makeCerts(dir: string, names: readonly string[], addresses: readonly string[]) {
  const caKey = join(dir, "ca.key");
  const caFile = join(dir, "ca.pem");
  const keyFile = join(dir, "host.key");
  const certFile = join(dir, "host.crt");
  const csr = join(dir, "host.csr");
  const ext = join(dir, "host.ext");
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await execa("openssl", [
    "req",
    "-x509",
    ...ec,
    "-days",
    "2",
    "-subj",
    "/CN=Wrenn egress test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-keyout",
    caKey,
    "-out",
    caFile,
  ]);
  await execa("openssl", ["req", ...ec, "-subj", `/CN=${names[0] ?? "test host"}`, "-keyout", keyFile, "-out", csr]);
  const san = [...names.map((n) => `DNS:${n}`), ...addresses.map((a) => `IP:${a}`)].join(",");
  await writeFile(
    ext,
    `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n`,
  );
  await execa("openssl", [
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    caFile,
    "-CAkey",
    caKey,
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    ext,
    "-out",
    certFile,
  ]);
  return { caFile, certFile, keyFile, caPem: await readFile(caFile, "utf8") };
}

export async function startTestInternet(opts: TestInternetOptions = {}): Promise<TestInternet> {
  const names = [...(opts.names ?? DEFAULT_NAMES)].map((n) => n.toLowerCase());
  const unnamedCount = opts.unnamedHosts ?? 1;
  const resolverAddresses = [...(opts.resolverAddresses ?? ["8.8.8.8", "8.8.4.4"])];
  const tcpPort = opts.tcpPort ?? 7000;
  const suffix = randomBytes(3).toString("hex");
  const netns = `wi${suffix}`;
  const veth = `wi${suffix}r`;
  const nftTable = `wrenn_leak_${suffix}`;
  const { stdout: routes } = await execa("ip", ["-4", "route", "show", "table", "all"]);
  let octet = randomInt(16, 250);
  for (let i = 0; i < 50 && routes.includes(`172.30.${octet}.`); i++) octet = randomInt(16, 250);
  const gatewayIp = `172.30.${octet}.1`;
  const privateIp = `172.30.${octet}.2`;
  const { stdout: rulesNow } = await execa("ip", ["-4", "rule"]);
  const octets = pickOctets(names.length + unnamedCount, rulesNow);
  const addresses = octets.map((o) => `${PUBLIC_STAND_IN_NET}.${o}`);
  const byName = new Map(names.map((n, i) => [n, addresses[i] as string]));
  const unnamed = addresses.slice(names.length);
  const table = randomInt(20_000, 30_000);
  const rulePref = opts.rulePref ?? randomInt(32_000, 32_600);
  const captured: string[] = [];
  const toRules: string[] = [];
  const events: ServerEvent[] = [];
  let server: ChildProcess | undefined;
  let dir: string | undefined;
  let nftMade = false;
  const acks: (() => void)[] = [];

  const stop = async () => {
    if (server?.pid !== undefined && server.exitCode === null && server.signalCode === null) {
      server.stdin?.destroy();
      process.kill(server.pid, "SIGKILL");
    }
    const batch = [
      ...captured.flatMap((hostVeth) => [
        `rule del iif ${hostVeth} lookup ${table} pref ${rulePref}`,
        `rule del iif ${hostVeth} unreachable pref ${rulePref + 1}`,
      ]),
      ...toRules.map((address) => `rule del to ${address}/32 lookup ${table} pref ${rulePref + 2}`),
    ];
    captured.length = 0;
    toRules.length = 0;
    if (batch.length > 0)
      await execa("ip", ["-force", "-batch", "-"], { input: `${batch.join("\n")}\n`, reject: false });
    await execa("ip", ["route", "flush", "table", String(table)], { reject: false });
    if (nftMade) await execa("nft", ["delete", "table", "inet", nftTable], { reject: false });
    nftMade = false;
    await execa("ip", ["netns", "del", netns], { reject: false });
    await execa("ip", ["link", "del", veth], { reject: false });
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  };

  let certs: Awaited<ReturnType<typeof makeCerts>>;
  try {
    dir = await mkdtemp(join(tmpdir(), "wrenn-internet-"));
    certs = await makeCerts(dir, names, addresses);

    // The counter first: from here on, anything of ours on the default route is seen.
    const devices = await defaultRouteDevices();
    const watched = [`${PUBLIC_STAND_IN_NET}.0/24`, ...resolverAddresses];
    const counted =
      devices.length === 0
        ? []
        : [
            `    oifname { ${devices.map((d) => `"${d}"`).join(", ")} } ip daddr { ${watched.join(", ")} } counter name leaked`,
          ];
    await execa("nft", ["-f", "-"], {
      input: [
        `table inet ${nftTable} {`,
        "  counter leaked {}",
        "  chain postrouting {",
        // Before any NAT (srcnat is 100): the source is still the slot's.
        "    type filter hook postrouting priority -300; policy accept;",
        ...counted,
        "  }",
        "}",
        "",
      ].join("\n"),
    });
    nftMade = true;

    await execa("ip", ["netns", "add", netns]);
    await execa("ip", ["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns]);
    await execa("ip", ["addr", "add", `${gatewayIp}/30`, "dev", veth]);
    await execa("ip", ["link", "set", veth, "up"]);
    const inside = [
      "link set lo up",
      `addr add ${privateIp}/30 dev eth0`,
      "link set eth0 up",
      ...addresses.map((a) => `addr add ${a}/32 dev lo`),
      ...resolverAddresses.map((a) => `addr add ${a}/32 dev lo`),
    ];
    await execa("ip", ["-n", netns, "-batch", "-"], { input: `${inside.join("\n")}\n` });
    // Only this table routes into the test netns, and it is only consulted by the rules below.
    await execa("ip", ["route", "add", "default", "via", privateIp, "dev", veth, "table", String(table)]);
    const rules = addresses.map((a) => `rule add to ${a}/32 lookup ${table} pref ${rulePref + 2}`);
    toRules.push(...addresses);
    await execa("ip", ["-batch", "-"], { input: `${rules.join("\n")}\n` });

    const records: Record<string, string[]> = { ...opts.extraRecords };
    for (const [name, address] of byName) records[name] = [address];
    const config: ServerConfig = {
      records,
      ttl: opts.ttl ?? 60,
      certFile: certs.certFile,
      keyFile: certs.keyFile,
      tcpPort,
      dnsAddresses: [privateIp, ...addresses, ...resolverAddresses],
    };
    const child = spawn(
      "ip",
      ["netns", "exec", netns, process.execPath, "--import", "tsx", SERVER, JSON.stringify(config)],
      { cwd: repoRoot, stdio: ["pipe", "pipe", "pipe"] },
    );
    server = child;
    let stderr = "";
    child.stderr?.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    let buffered = "";
    const ready = new Promise<void>((resolve, reject) => {
      child.once("exit", (code) => reject(new Error(`test internet server exited (${code}): ${stderr}`)));
      child.stdout?.on("data", (chunk: Buffer) => {
        buffered += chunk.toString();
        const lines = buffered.split("\n");
        buffered = lines.pop() ?? "";
        for (const line of lines) {
          if (line === "") continue;
          const event = JSON.parse(line) as ServerEvent | { kind: "ready" } | { kind: "ack" };
          if (event.kind === "ready") resolve();
          else if (event.kind === "ack") acks.shift()?.();
          else events.push(event);
        }
      });
    });
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      ready,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`test internet server did not start: ${stderr}`)), 30_000);
      }),
    ]).finally(() => clearTimeout(timer));
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    netns,
    gatewayIp,
    privateIp,
    dnsUpstream: `${privateIp}:53`,
    agentEnv: { AGENT_EGRESS: "on", AGENT_DNS_UPSTREAM: `${privateIp}:53` },
    ipOf(name: string) {
      const address = byName.get(name.toLowerCase());
      if (address === undefined) throw new Error(`no test host named ${name}`);
      return address;
    },
    unnamed,
    addresses,
    caPem: certs.caPem,
    caFile: certs.caFile,
    tcpPort,
    events: () => [...events],
    dnsQuestions: () => events.filter((e): e is DnsEvent => e.kind === "dns"),
    httpRequests: () => events.filter((e): e is HttpEvent => e.kind === "http"),
    tcpConnections: () => events.filter((e): e is TcpEvent => e.kind === "tcp"),
    async waitForEvent(match: (e: ServerEvent) => boolean, timeoutMs = 2_000): Promise<ServerEvent> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = events.find(match);
        if (found !== undefined) return found;
        if (Date.now() > deadline) throw new Error(`no such test internet event within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async setRecord(name: string, recordAddresses: string[] | null) {
      const acked = new Promise<void>((resolve) => acks.push(resolve));
      server?.stdin?.write(`${JSON.stringify({ name: name.toLowerCase(), addresses: recordAddresses })}\n`);
      await acked;
    },
    async captureSlots(hostVeths: readonly string[]) {
      const fresh = hostVeths.filter((v) => !captured.includes(v));
      captured.push(...fresh);
      // Should the table ever lose its route, the next rule refuses rather than falling through to main.
      const batch = fresh.flatMap((hostVeth) => [
        `rule add iif ${hostVeth} lookup ${table} pref ${rulePref}`,
        `rule add iif ${hostVeth} unreachable pref ${rulePref + 1}`,
      ]);
      if (batch.length > 0) await execa("ip", ["-batch", "-"], { input: `${batch.join("\n")}\n` });
    },
    async watchSlots(cidr: string) {
      const devices = await defaultRouteDevices();
      if (devices.length === 0) return;
      await execa("nft", [
        "add",
        "rule",
        "inet",
        nftTable,
        "postrouting",
        "oifname",
        `{ ${devices.map((d) => `"${d}"`).join(", ")} }`,
        "ip",
        "saddr",
        cidr,
        "counter",
        "name",
        "leaked",
      ]);
    },
    async leakedPackets() {
      const { stdout } = await execa("nft", ["list", "counter", "inet", nftTable, "leaked"]);
      return Number(/packets (\d+)/.exec(stdout)?.[1] ?? "NaN");
    },
    stop,
  };
}
