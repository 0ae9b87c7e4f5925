import { mkdtemp, readdir, rm } from "node:fs/promises";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type EgressPolicy, parseEgressPolicy } from "../../lib/egress-policy.js";
import { noopLogger } from "../logger.js";
import { ConnectionLog } from "./connection-log.js";
import { type Destination, EgressProxy, type EgressProxyOptions } from "./proxy.js";

/**
 * A hostile guest against the proxy's reading of the first bytes, through its public options and real
 * loopback sockets: a megabyte without a name, nothing at all, a byte at a time, and more connections
 * than its share. The proxy must decide within its bounds (16 KiB, the peek timeout), close what is
 * over the cap, and keep serving another sandbox. Sandbox A connects from 127.0.0.1, B from 127.0.0.2;
 * the "destination" is a sink on loopback that counts what reaches it.
 */

const A = "proxyhostileaaaaaaaa";
const B = "proxyfriendlybbbbbbb";
const MiB = 1024 * 1024;

let dir: string;
/** The upstream every allowed connection is dialled to: counts bytes, answers "ok" at the client's end. */
let sink: Server;
let sinkPort: number;
let sinkBytes: number[];
let dialed: Destination[];
let proxy: EgressProxy | undefined;
let log: ConnectionLog;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "wrenn-proxy-hostile-"));
  sink = createServer({ allowHalfOpen: true }, (s) => {
    let n = 0;
    const i = sinkBytes.push(0) - 1;
    s.on("data", (c: Buffer) => {
      n += c.length;
      sinkBytes[i] = n;
    });
    s.on("end", () => s.end("ok"));
    s.on("error", () => {});
  });
  await new Promise<void>((r) => sink.listen(0, "127.0.0.1", () => r()));
  sinkPort = (sink.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise((r) => sink.close(r));
  await rm(dir, { recursive: true, force: true });
});

afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
  await log?.flush();
});

async function startProxy(policy: EgressPolicy, options: Partial<EgressProxyOptions> = {}): Promise<EgressProxy> {
  sinkBytes = [];
  dialed = [];
  log = new ConnectionLog({ dir: await mkdtemp(join(dir, "log-")), logger: noopLogger });
  const parsed = parseEgressPolicy(policy);
  proxy = new EgressProxy({
    targets: {
      bySlotIp: (ip) =>
        ip === "127.0.0.1"
          ? { sandboxId: A, policy: parsed, internetAccess: true }
          : ip === "127.0.0.2"
            ? { sandboxId: B, policy: parsed, internetAccess: true }
            : undefined,
    },
    log,
    logger: noopLogger,
    httpPort: 0,
    tlsPort: 0,
    host: "127.0.0.1",
    originalDestination: (_socket, kind) => ({ address: "192.88.99.10", port: kind === "http" ? 80 : 443 }),
    dial: (d) => {
      dialed.push(d);
      return connect({ host: "127.0.0.1", port: sinkPort, allowHalfOpen: true });
    },
    ...options,
  });
  await proxy.start();
  return proxy;
}

function open(port: number, localAddress = "127.0.0.1"): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, localAddress });
    s.on("error", () => {});
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

/** How long until the proxy closed the connection, by FIN or reset (rejects after `limitMs`). */
function closedWithin(s: Socket, limitMs: number): Promise<number> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    if (s.destroyed) return resolve(0);
    const timer = setTimeout(() => reject(new Error(`still open after ${limitMs} ms`)), limitMs);
    s.resume();
    const done = () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    };
    s.once("end", done);
    s.once("close", done);
  });
}

const openFds = async () => (await readdir("/proc/self/fd")).length;
/** Bytes that are neither a TLS record nor an HTTP request: no name in them. */
const noName = (n: number) => Buffer.alloc(n, 0x5a);

describe("EgressProxy against a hostile guest", () => {
  it("judges a megabyte without a name at the 16 KiB cap as nameless: denied, closed, never dialled", async () => {
    const p = await startProxy({ allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] });
    const s = await open(p.ports.tls);
    const started = Date.now();
    s.write(noName(MiB));
    expect(await closedWithin(s, 3000)).toBeLessThan(3000);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(dialed).toEqual([]);
    expect(await log.list(A, { limit: 10 })).toMatchObject([
      { protocol: "tcp", address: "192.88.99.10", port: 443, verdict: "denied", rule: "0.0.0.0/0" },
    ]);
    expect((await log.list(A, { limit: 10 }))[0]?.name).toBeUndefined();
  });

  it("relays every byte of a nameless megabyte that its address allows (nothing lost at the cap)", async () => {
    const p = await startProxy({ allowOut: [], denyOut: ["203.0.113.0/24"] });
    const s = await open(p.ports.tls);
    const answer = new Promise<string>((resolve) => {
      let got = "";
      s.on("data", (c: Buffer) => {
        got += c.toString();
      });
      s.once("close", () => resolve(got));
    });
    s.end(noName(MiB));
    expect(await answer).toBe("ok");
    expect(dialed).toEqual([{ address: "192.88.99.10", port: 443 }]);
    expect(sinkBytes).toEqual([MiB]);
    await expect
      .poll(async () => (await log.list(A, { limit: 10 }))[0], { timeout: 3000 })
      .toMatchObject({ verdict: "allowed", bytesOut: MiB, bytesIn: 2 });
  });

  it("closes a connection that sends nothing, or a byte at a time, at the peek timeout", async () => {
    const p = await startProxy({ allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] }, { peekTimeoutMs: 400 });
    const silent = await open(p.ports.tls);
    const trickler = await open(p.ports.tls);
    // The start of a TLS handshake record, then a byte every 50 ms: never a whole ClientHello.
    trickler.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
    const trickle = setInterval(() => trickler.destroyed || trickler.write(Buffer.from([0x00])), 50);
    const httpTrickler = await open(p.ports.http);
    httpTrickler.write("GET / HTTP/1.1\r\n");
    const httpTrickle = setInterval(() => httpTrickler.destroyed || httpTrickler.write("X"), 50);
    try {
      const times = await Promise.all([silent, trickler, httpTrickler].map((s) => closedWithin(s, 3000)));
      for (const ms of times) expect(ms).toBeLessThan(2000);
    } finally {
      clearInterval(trickle);
      clearInterval(httpTrickle);
    }
    expect(dialed).toEqual([]);
    const entries = await log.list(A, { limit: 10 });
    expect(entries).toHaveLength(3);
    expect(entries.every((e) => e.verdict === "denied" && e.name === undefined)).toBe(true);
  });

  it("closes connections over a sandbox's cap at once; another sandbox is unaffected", async () => {
    const cap = 16;
    const p = await startProxy(
      { allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] },
      { maxConnectionsPerSandbox: cap, peekTimeoutMs: 20_000 },
    );
    const fdsBefore = await openFds();
    // A holds its whole share open in the peek (sending nothing)…
    const held = await Promise.all(Array.from({ length: cap }, () => open(p.ports.http)));
    await new Promise((r) => setTimeout(r, 100));
    // …and every further connection of A is closed as it arrives.
    const extra = await Promise.all(Array.from({ length: 40 }, () => open(p.ports.http)));
    const times = await Promise.all(extra.map((s) => closedWithin(s, 1000)));
    expect(Math.max(...times)).toBeLessThan(1000);
    // The agent holds one descriptor per held connection (the test holds its own end too), not per attempt.
    expect((await openFds()) - fdsBefore).toBeLessThanOrEqual(2 * cap + 8);

    // B's request goes through: named, allowed, relayed.
    const b = await open(p.ports.http, "127.0.0.2");
    const answer = new Promise<string>((resolve) => {
      let got = "";
      b.on("data", (c: Buffer) => {
        got += c.toString();
      });
      b.once("close", () => resolve(got));
    });
    b.end("GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n");
    expect(await answer).toBe("ok");
    expect(await log.list(B, { limit: 10 })).toMatchObject([
      { verdict: "allowed", name: "a.example.test", nameSource: "host", rule: "*.example.test" },
    ]);

    // A's share comes back as its connections close.
    for (const s of held) s.destroy();
    await new Promise((r) => setTimeout(r, 200));
    const again = await open(p.ports.http);
    again.end("GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n");
    expect(await closedWithin(again, 3000)).toBeLessThan(3000);
    expect(dialed.length).toBe(2);
  });
});
