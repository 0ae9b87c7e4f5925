import { mkdtemp, readdir, rm } from "node:fs/promises";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer as createTlsServer, type Server as TlsServer, connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type EgressPolicy, parseEgressPolicy } from "../../lib/egress-policy.js";
import { selfSignedCert } from "../../test/helpers/tls.js";
import { createExec } from "../exec.js";
import { noopLogger } from "../logger.js";
import { type ConnectionEntry, ConnectionLog } from "./connection-log.js";
import { type Destination, EgressProxy } from "./proxy.js";
import { ResolvedNames } from "./resolved-names.js";
import { SpliceRelay } from "./splice-relay.js";

const SB = "p1p2p3p4p5p6p7p8p9p0";

let dir: string;
let httpUpstream: HttpServer;
let tlsUpstream: TlsServer;
let upstreamPorts: { http: number; tls: number };
let ca: string;
let proxy: EgressProxy;
let log: ConnectionLog;
let policy: EgressPolicy;
/** What the test pretends the guest dialled (AnyIP's localAddress in production). */
let destination: Destination;
let dialed: Destination[];

const listenPort = (server: { address(): unknown }) => (server.address() as { port: number }).port;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "wrenn-proxy-"));
  const cert = selfSignedCert(dir, "upstream", "DNS:a.example.test,DNS:forbidden.test");
  ca = cert.cert;
  httpUpstream = createHttpServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => {
      body += c.toString();
    });
    req.on("end", () => res.end(`hello ${req.headers.host} ${body}`));
  });
  tlsUpstream = createTlsServer({ cert: cert.cert, key: cert.key }, (s) => s.pipe(s));
  await new Promise<void>((r) => httpUpstream.listen(0, "127.0.0.1", () => r()));
  await new Promise<void>((r) => tlsUpstream.listen(0, "127.0.0.1", () => r()));
  upstreamPorts = { http: listenPort(httpUpstream), tls: listenPort(tlsUpstream) };
  splice = new SpliceRelay({ exec: createExec(noopLogger), logger: noopLogger, dir: join(dir, "relay") });
  expect(await splice.start()).toBe(true);
}, 120_000);

afterAll(async () => {
  await proxy?.close();
  await splice?.close();
  httpUpstream.close();
  tlsUpstream.close();
  await rm(dir, { recursive: true, force: true });
});

/** The kernel relay, or none (the Node relay): every case runs with each. */
let relay: SpliceRelay | undefined;
let splice: SpliceRelay;

async function startProxy(): Promise<void> {
  await proxy?.close();
  await log?.flush();
  await rm(join(dir, `${SB}.jsonl`), { force: true });
  policy = { allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] };
  destination = { address: "192.88.99.10", port: 443 };
  dialed = [];
  log = new ConnectionLog({ dir, logger: noopLogger });
  proxy = new EgressProxy({
    targets: {
      bySlotIp: (ip) =>
        ip === "127.0.0.1" ? { sandboxId: SB, policy: parseEgressPolicy(policy), internetAccess: true } : undefined,
    },
    log,
    logger: noopLogger,
    httpPort: 0,
    tlsPort: 0,
    host: "127.0.0.1",
    originalDestination: () => destination,
    dial: (d) => {
      dialed.push(d);
      return connect({ host: "127.0.0.1", port: d.port === 80 ? upstreamPorts.http : upstreamPorts.tls });
    },
    peekTimeoutMs: 300,
    relay,
  });
  await proxy.start();
}

/** Sends raw bytes to a proxy listener and returns everything it answers until it closes. */
function exchange(port: number, data: string | Buffer, localAddress = "127.0.0.1"): Promise<string> {
  return new Promise((resolve) => {
    const s: Socket = connect({ host: "127.0.0.1", port, localAddress });
    let got = "";
    s.on("data", (c: Buffer) => {
      got += c.toString("latin1");
    });
    s.on("error", () => resolve(got));
    s.on("close", () => resolve(got));
    s.write(data);
  });
}

async function settledEntries(): Promise<ConnectionEntry[]> {
  for (let i = 0; i < 100; i++) {
    const entries = await log.list(SB, { limit: 100 });
    if (entries.length > 0 && entries.every((e) => e.endedAt !== undefined)) return entries;
    await new Promise((r) => setTimeout(r, 20));
  }
  return log.list(SB, { limit: 100 });
}

function tlsHandshake(servername: string): Promise<{ ok: boolean; echo?: string }> {
  return new Promise((resolve) => {
    const s = tlsConnect({ host: "127.0.0.1", port: proxy.ports.tls, servername, ca });
    s.on("secureConnect", () => {
      s.write("ping");
      s.once("data", (c: Buffer) => {
        s.end();
        resolve({ ok: true, echo: c.toString() });
      });
    });
    s.on("error", () => resolve({ ok: false }));
    s.on("close", () => resolve({ ok: false }));
  });
}

describe.each(["node", "splice"] as const)("EgressProxy (%s relay)", (mode) => {
  beforeEach(async () => {
    relay = mode === "splice" ? splice : undefined;
    await startProxy();
  });

  it("relays an allowed HTTP request to the original destination and logs it with bytes", async () => {
    destination = { address: "192.88.99.10", port: 80 };
    const answer = await exchange(
      proxy.ports.http,
      "POST / HTTP/1.1\r\nHost: a.example.test\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody",
    );
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    expect(answer).toContain("hello a.example.test body");
    expect(dialed).toEqual([{ address: "192.88.99.10", port: 80 }]);
    const [entry] = await settledEntries();
    expect(entry).toMatchObject({
      protocol: "tcp",
      address: "192.88.99.10",
      port: 80,
      name: "a.example.test",
      nameSource: "host",
      verdict: "allowed",
      rule: "*.example.test",
      list: "allowOut",
    });
    expect(entry?.bytesOut).toBeGreaterThan(60);
    expect(entry?.bytesIn).toBe(Buffer.byteLength(answer));
  });

  it("relays a large upload and download byte-exact and logs the exact counts", async () => {
    // A raw upstream: counts what it receives until the FIN, then answers 24 MiB and ends.
    let received = 0;
    const raw = createServer({ allowHalfOpen: true }, (s) => {
      s.on("data", (c: Buffer) => {
        received += c.length;
      });
      s.on("end", () => {
        const block = Buffer.alloc(2 ** 20, 7);
        let n = 0;
        const more = () => {
          while (n < 24) {
            n++;
            if (!s.write(block)) return void s.once("drain", more);
          }
          s.end();
        };
        more();
      });
    });
    await new Promise<void>((r) => raw.listen(0, "127.0.0.1", () => r()));
    await proxy.close();
    proxy = new EgressProxy({
      targets: { bySlotIp: () => ({ sandboxId: SB, policy: parseEgressPolicy(policy), internetAccess: true }) },
      log,
      logger: noopLogger,
      httpPort: 0,
      tlsPort: 0,
      host: "127.0.0.1",
      originalDestination: () => ({ address: "192.88.99.10", port: 80 }),
      dial: () => connect({ host: "127.0.0.1", port: listenPort(raw), allowHalfOpen: true }),
      relay,
    });
    await proxy.start();
    const takenBefore = splice.taken;
    const head = "PUT / HTTP/1.1\r\nHost: a.example.test\r\n\r\n";
    const upload = Buffer.alloc(8 * 2 ** 20, 3);
    const got = await new Promise<number>((resolve, reject) => {
      const s = connect({ host: "127.0.0.1", port: proxy.ports.http, allowHalfOpen: true });
      let n = 0;
      s.on("data", (c: Buffer) => {
        n += c.length;
      });
      s.on("end", () => resolve(n));
      s.on("error", reject);
      s.write(head);
      s.end(upload);
    });
    raw.close();
    expect(got).toBe(24 * 2 ** 20);
    expect(received).toBe(head.length + upload.length);
    const [entry] = await settledEntries();
    expect(entry).toMatchObject({ verdict: "allowed", bytesOut: head.length + upload.length, bytesIn: 24 * 2 ** 20 });
    expect(splice.taken - takenBefore).toBe(mode === "splice" ? 1 : 0);
  }, 30_000);

  it("leaves no descriptor behind after 200 relayed connections", async () => {
    destination = { address: "192.88.99.10", port: 80 };
    const fds = async () => (await readdir("/proc/self/fd")).length;
    const relayFds = async () => (splice.pid === undefined ? 0 : (await readdir(`/proc/${splice.pid}/fd`)).length);
    const request = "GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n";
    await exchange(proxy.ports.http, request);
    await settledEntries();
    const before = { agent: await fds(), relay: await relayFds(), taken: splice.taken };
    for (let batch = 0; batch < 10; batch++) {
      const answers = await Promise.all(Array.from({ length: 20 }, () => exchange(proxy.ports.http, request)));
      for (const answer of answers) expect(answer).toContain("hello a.example.test");
    }
    let entries: ConnectionEntry[] = [];
    for (let i = 0; i < 100; i++) {
      entries = await log.list(SB, { limit: 1000 });
      if (entries.length === 201 && entries.every((e) => e.endedAt !== undefined)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(entries).toHaveLength(201);
    expect(splice.taken - before.taken).toBe(mode === "splice" ? 200 : 0);
    expect(entries.every((e) => e.verdict === "allowed" && (e.bytesIn ?? 0) > 0)).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(await fds()).toBeLessThanOrEqual(before.agent);
    expect(await relayFds()).toBe(before.relay);
  }, 30_000);

  it("answers a denied HTTP request 403 naming the rule, without connecting", async () => {
    destination = { address: "192.88.99.10", port: 80 };
    const answer = await exchange(proxy.ports.http, "GET / HTTP/1.1\r\nHost: forbidden.test\r\n\r\n");
    expect(answer).toMatch(/^HTTP\/1\.1 403 Forbidden/);
    expect(answer).toContain(
      "egress to forbidden.test is denied by the sandbox's network policy (denyOut rule 0.0.0.0/0)",
    );
    expect(dialed).toEqual([]);
    expect(await settledEntries()).toMatchObject([
      { verdict: "denied", name: "forbidden.test", nameSource: "host", rule: "0.0.0.0/0", bytesOut: 0 },
    ]);
  });

  it("passes TLS through for an allowed SNI (the guest's handshake is with the real server)", async () => {
    expect(await tlsHandshake("a.example.test")).toEqual({ ok: true, echo: "ping" });
    const [entry] = await settledEntries();
    expect(entry).toMatchObject({ name: "a.example.test", nameSource: "sni", verdict: "allowed", port: 443 });
    expect(entry?.bytesIn).toBeGreaterThan(0);
  });

  it("refuses a denied SNI even to an address the guest was given for another name", async () => {
    expect(await tlsHandshake("forbidden.test")).toEqual({ ok: false });
    expect(dialed).toEqual([]);
    expect(await settledEntries()).toMatchObject([
      { name: "forbidden.test", nameSource: "sni", verdict: "denied", list: "denyOut" },
    ]);
  });

  it("blocks private, metadata and loopback addresses before any rule, even an allowing one", async () => {
    policy = { allowOut: ["0.0.0.0/0", "*.example.test"], denyOut: [] };
    for (const address of ["10.0.0.5", "169.254.169.254", "127.0.0.1", "192.168.1.1"]) {
      destination = { address, port: 80 };
      const answer = await exchange(proxy.ports.http, "GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n");
      expect(answer).toMatch(/^HTTP\/1\.1 403/);
      expect(answer).toContain("platform rule");
    }
    expect(dialed).toEqual([]);
    const entries = await settledEntries();
    expect(entries.map((e) => [e.list, e.rule])).toEqual([
      ["platform", "10.0.0.0/8"],
      ["platform", "169.254.0.0/16"],
      ["platform", "127.0.0.0/8"],
      ["platform", "192.168.0.0/16"],
    ]);
  });

  it("judges a connection without a name by its address", async () => {
    policy = { allowOut: ["192.88.99.10"], denyOut: ["0.0.0.0/0"] };
    destination = { address: "192.88.99.10", port: 443 };
    expect(await tlsHandshake("")).toMatchObject({ ok: false }); // no SNI: the cert does not name the address
    destination = { address: "192.88.99.20", port: 443 };
    const denied = await exchange(proxy.ports.tls, Buffer.from("not tls at all\n"));
    expect(denied).toBe("");
    const entries = await settledEntries();
    expect(entries.map((e) => [e.address, e.verdict, e.name])).toEqual([
      ["192.88.99.10", "allowed", undefined],
      ["192.88.99.20", "denied", undefined],
    ]);
  });

  it("answers 502 to an allowed HTTP request whose destination refuses", async () => {
    destination = { address: "192.88.99.10", port: 81 };
    const closed = createHttpServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", () => r()));
    const refusingPort = listenPort(closed);
    await new Promise((r) => closed.close(r));
    upstreamPorts = { ...upstreamPorts, tls: refusingPort };
    try {
      const answer = await exchange(proxy.ports.http, "GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n");
      expect(answer).toMatch(/^HTTP\/1\.1 502 Bad Gateway/);
    } finally {
      upstreamPorts = { http: listenPort(httpUpstream), tls: listenPort(tlsUpstream) };
    }
    expect(await settledEntries()).toMatchObject([{ verdict: "allowed", bytesIn: 0 }]);
  });

  it("closes a sandbox's connections beyond its share", async () => {
    await proxy.close();
    proxy = new EgressProxy({
      targets: {
        bySlotIp: () => ({ sandboxId: SB, policy: parseEgressPolicy(policy), internetAccess: true }),
      },
      log,
      logger: noopLogger,
      httpPort: 0,
      tlsPort: 0,
      host: "127.0.0.1",
      originalDestination: () => destination,
      maxConnectionsPerSandbox: 2,
      peekTimeoutMs: 5000,
      relay,
    });
    await proxy.start();
    const idle = [0, 1].map(() => connect({ host: "127.0.0.1", port: proxy.ports.tls }));
    await Promise.all(idle.map((s) => new Promise((r) => s.once("connect", r))));
    await new Promise((r) => setTimeout(r, 50));
    expect(await exchange(proxy.ports.tls, "x")).toBe("");
    for (const s of idle) s.destroy();
  });

  it("names a connection without SNI by the name the resolver answered its address for", async () => {
    await proxy.close();
    const resolvedNames = new ResolvedNames();
    resolvedNames.remember(SB, "a.example.test", ["192.88.99.10"], 60);
    proxy = new EgressProxy({
      targets: {
        bySlotIp: () => ({ sandboxId: SB, policy: parseEgressPolicy(policy), internetAccess: true }),
      },
      log,
      logger: noopLogger,
      httpPort: 0,
      tlsPort: 0,
      host: "127.0.0.1",
      originalDestination: () => destination,
      dial: () => connect({ host: "127.0.0.1", port: upstreamPorts.tls }),
      resolvedNames,
      peekTimeoutMs: 300,
      relay,
    });
    await proxy.start();
    destination = { address: "192.88.99.10", port: 443 };
    expect(await tlsHandshake("")).toEqual({ ok: false }); // reaches the server; its cert names no address
    destination = { address: "192.88.99.20", port: 443 };
    expect(await tlsHandshake("")).toEqual({ ok: false });
    // A name the connection carries wins over the resolved one.
    destination = { address: "192.88.99.10", port: 443 };
    expect(await tlsHandshake("forbidden.test")).toEqual({ ok: false });
    const entries = await settledEntries();
    expect(entries.map((e) => [e.address, e.name, e.nameSource, e.verdict])).toEqual([
      ["192.88.99.10", "a.example.test", "dns", "allowed"],
      ["192.88.99.20", undefined, undefined, "denied"],
      ["192.88.99.10", "forbidden.test", "sni", "denied"],
    ]);
  });

  it("closes connections from addresses that are not a sandbox's slot", async () => {
    destination = { address: "192.88.99.10", port: 80 };
    const answer = await exchange(proxy.ports.http, "GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n", "127.0.0.2");
    expect(answer).toBe("");
    expect(dialed).toEqual([]);
  });

  it("fails to start with a message naming the variable when a port is taken", async () => {
    const second = new EgressProxy({
      targets: { bySlotIp: () => undefined },
      log,
      logger: noopLogger,
      httpPort: 0,
      tlsPort: proxy.ports.tls,
      host: "127.0.0.1",
    });
    await expect(second.start()).rejects.toThrow(/AGENT_EGRESS_TLS_PORT/);
  });
});
