import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import dnsPacket, { type DecodedPacket, type Packet } from "dns-packet";
import { execa } from "execa";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { parseEgressPolicy } from "../../lib/egress-policy.js";
import { noopLogger } from "../logger.js";
import { ConnectionLog } from "./connection-log.js";
import { EgressResolver } from "./resolver.js";
import type { EgressLookup } from "./targets.js";

/**
 * A hostile guest against the agent's resolver: floods beyond its in-flight share, malformed messages,
 * TCP clients that lie about lengths or trickle bytes. The agent side must stay bounded (answers or
 * refusals, descriptors, time) and another sandbox's questions must still be answered promptly.
 * Everything runs on loopback: sandbox A asks from 127.0.0.1, sandbox B from 127.0.0.2, and the
 * upstream is a local UDP server that answers every question after a delay.
 */

const A = "hostileaaaaaaaaaaaaa";
const B = "friendlybbbbbbbbbbbb";
const UPSTREAM_DELAY_MS = 300;

const policy = parseEgressPolicy({ allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] });
const targets: EgressLookup = {
  bySlotIp: (ip) =>
    ip === "127.0.0.1"
      ? { sandboxId: A, policy, internetAccess: true }
      : ip === "127.0.0.2"
        ? { sandboxId: B, policy, internetAccess: true }
        : undefined,
  allowResolved: async () => {},
};

let upstream: UdpSocket;
/** Questions the upstream holds right now, and the most it ever held at once. */
let upstreamHeld = 0;
let upstreamPeak = 0;
let dir: string;
let log: ConnectionLog;
let resolver: EgressResolver;

beforeAll(async () => {
  upstream = createSocket("udp4");
  upstream.on("message", (msg, rinfo) => {
    upstreamHeld++;
    upstreamPeak = Math.max(upstreamPeak, upstreamHeld);
    setTimeout(() => {
      upstreamHeld--;
      const q = dnsPacket.decode(msg);
      const name = q.questions?.[0]?.name ?? "";
      const reply = dnsPacket.encode({
        type: "response",
        id: q.id,
        flags: 0x0180,
        questions: q.questions,
        answers: [{ type: "A", name, ttl: 30, data: "192.88.99.10" }],
      });
      upstream.send(reply, rinfo.port, rinfo.address);
    }, UPSTREAM_DELAY_MS);
  });
  await new Promise<void>((r) => upstream.bind(0, "127.0.0.1", () => r()));
  dir = await mkdtemp(join(tmpdir(), "wrenn-resolver-hostile-"));
});

afterAll(async () => {
  upstream.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  upstreamPeak = 0;
  log = new ConnectionLog({ dir, logger: noopLogger });
  resolver = new EgressResolver({
    targets,
    log,
    logger: noopLogger,
    upstreams: [{ address: "127.0.0.1", port: upstream.address().port }],
    port: 0,
    host: "127.0.0.1",
    timeoutMs: 3000,
    maxTcpConnectionsPerSandbox: 4,
    tcpIdleMs: 600,
  });
  await resolver.start();
});

afterEach(async () => {
  await resolver.close();
  await log.flush();
});

let nextId = 1;
const query = (name: string): Packet => ({
  type: "query",
  id: nextId++ & 0xffff,
  flags: dnsPacket.RECURSION_DESIRED,
  questions: [{ type: "A", name, class: "IN" }],
});
const rcode = (p: DecodedPacket) => (p as DecodedPacket & { rcode: string }).rcode;

/** Sends raw datagrams from `source`; collects what comes back within `waitMs` of the last send. */
async function udpExchange(source: string, messages: Buffer[], waitMs: number): Promise<Buffer[]> {
  const socket = createSocket("udp4");
  const replies: Buffer[] = [];
  socket.on("message", (m) => replies.push(m));
  await new Promise<void>((r) => socket.bind(0, source, () => r()));
  for (const m of messages) socket.send(m, resolver.port, "127.0.0.1");
  await new Promise((r) => setTimeout(r, waitMs));
  socket.close();
  return replies;
}

/** A guest flooding the resolver from 127.0.0.1: N questions at once, then counts the replies' rcodes. */
const FLOODER = `
import json, socket, struct, sys, time
port, n, wait_ms = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("127.0.0.1", 0))
for i in range(n):
    name = b"".join(bytes([len(p)]) + p for p in (b"n%d" % i, b"example", b"test")) + b"\\0"
    s.sendto(struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1), ("127.0.0.1", port))
s.settimeout(0.05)
rcodes, replies, end = {}, 0, time.time() + wait_ms / 1000
while time.time() < end:
    try:
        m = s.recv(4096)
    except socket.timeout:
        continue
    replies += 1
    code = str(m[3] & 15)
    rcodes[code] = rcodes.get(code, 0) + 1
print(json.dumps({"sent": n, "replies": replies, "rcodes": rcodes}))
`;

/** One question from `source`, timed. */
async function askTimed(source: string, name: string): Promise<{ reply: DecodedPacket; ms: number }> {
  const started = Date.now();
  const socket = createSocket("udp4");
  try {
    const reply = await new Promise<DecodedPacket>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to ${name} from ${source}`)), 5000);
      socket.on("message", (m) => {
        clearTimeout(timer);
        resolve(dnsPacket.decode(m));
      });
      socket.bind(0, source, () => socket.send(dnsPacket.encode(query(name)), resolver.port, "127.0.0.1"));
    });
    return { reply, ms: Date.now() - started };
  } finally {
    socket.close();
  }
}

const openFds = async () => (await readdir("/proc/self/fd")).length;

function tcpConnect(source = "127.0.0.1"): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port: resolver.port, localAddress: source });
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

/** Resolves with how long the server took to close the connection (or rejects after `limitMs`). */
function closedWithin(s: Socket, limitMs: number): Promise<number> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    if (s.destroyed) return resolve(0);
    const timer = setTimeout(() => reject(new Error(`still open after ${limitMs} ms`)), limitMs);
    s.on("error", () => {});
    s.once("close", () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    });
  });
}

/** A DNS header: id, flags, qdcount, ancount, nscount, arcount. */
function header(qdcount: number, id = 0x4242): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(id, 0);
  h.writeUInt16BE(0x0100, 2);
  h.writeUInt16BE(qdcount, 4);
  return h;
}
const question = (nameBytes: Buffer) => Buffer.concat([nameBytes, Buffer.from([0, 1, 0, 1])]);
const labels = (parts: string[]) =>
  Buffer.concat([...parts.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p)])), Buffer.from([0])]);

describe("EgressResolver against a hostile guest", () => {
  it("bounds a flood beyond the in-flight share; another sandbox is still answered promptly", async () => {
    const fdsBefore = await openFds();
    // The guest is another process (its own event loop), as in a sandbox.
    const flooding = execa("python3", ["-c", FLOODER, String(resolver.port), "1000", "1500"]);
    await new Promise((r) => setTimeout(r, 150));
    const fdsDuring = await openFds();
    // While A's flood is in flight: B's question is answered after about one upstream delay.
    const b = await askTimed("127.0.0.2", "b.example.test");
    expect(rcode(b.reply)).toBe("NOERROR");
    expect(b.ms).toBeLessThan(UPSTREAM_DELAY_MS + 1500);

    const { stdout } = await flooding;
    const counts = JSON.parse(stdout) as { sent: number; replies: number; rcodes: Record<string, number> };
    expect(counts.sent).toBe(1000);
    // Answers and refusals only, never more replies than questions.
    expect(Object.keys(counts.rcodes).every((c) => c === "0" || c === "5")).toBe(true);
    expect(counts.replies).toBeLessThanOrEqual(1000);
    // At most its share reached the upstream at once (a socket each), the rest were refused.
    expect(upstreamPeak).toBeLessThanOrEqual(128 + 1);
    expect(counts.rcodes["0"] ?? 0).toBeGreaterThanOrEqual(100);
    expect(counts.rcodes["5"] ?? 0).toBeGreaterThan(100);
    // Descriptors: one upstream socket per question in flight, so at most the share (and a few).
    expect(fdsDuring - fdsBefore).toBeLessThanOrEqual(128 + 16);
    await new Promise((r) => setTimeout(r, 200));
    expect(await openFds()).toBeLessThanOrEqual(fdsBefore + 4);
  });

  it("logs denied questions", async () => {
    const replies = await udpExchange(
      "127.0.0.1",
      [dnsPacket.encode(query("evil.test")), dnsPacket.encode(query("other.evil.test"))],
      300,
    );
    expect(replies.map((m) => rcode(dnsPacket.decode(m)))).toEqual(["REFUSED", "REFUSED"]);
    expect((await log.list(A, { limit: 10, verdict: "denied" })).map((e) => [e.name, e.list])).toEqual([
      ["evil.test", "denyOut"],
      ["other.evil.test", "denyOut"],
    ]);
  });

  it("answers malformed messages with FORMERR or silence, quickly, and keeps serving", async () => {
    const selfPointer = Buffer.concat([header(1), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
    const forwardPointer = Buffer.concat([header(1), Buffer.from([0xc0, 20, 0, 1, 0, 1, 0, 0])]);
    const pointerLoop = Buffer.concat([header(1), Buffer.from([1, 0x61, 0xc0, 12, 0, 1, 0, 1])]);
    const longName = question(labels(Array.from({ length: 5 }, () => "a".repeat(63))));
    const manyLabels = question(labels(Array.from({ length: 200 }, () => "a")));
    const messages: Record<string, Buffer> = {
      empty: Buffer.alloc(0),
      "five bytes": Buffer.from([1, 2, 3, 4, 5]),
      "header only, one question promised": header(1),
      "zero questions": header(0),
      "cut inside the name": Buffer.concat([header(1), Buffer.from([10, 0x61, 0x62])]),
      "a pointer to itself": selfPointer,
      "a pointer forward": forwardPointer,
      "a pointer loop": pointerLoop,
      "a name over 253 bytes": Buffer.concat([header(1), longName]),
      "200 labels": Buffer.concat([header(1), manyLabels]),
      "a bad label type": Buffer.concat([header(1), Buffer.from([0x80, 0x61, 0, 0, 1, 0, 1])]),
      "65535 questions promised, one there": Buffer.concat([header(65535), question(labels(["x", "example", "test"]))]),
      "a response, not a query": Buffer.concat([
        Buffer.from([0x42, 0x42, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]),
        question(labels(["x", "example", "test"])),
      ]),
    };
    const started = Date.now();
    for (const [what, msg] of Object.entries(messages)) {
      const replies = await udpExchange("127.0.0.1", [msg], 150);
      const codes = replies.map((r) => (r.length >= 4 ? r.readUInt16BE(2) & 0xf : -1));
      expect(
        codes.every((c) => c === 1 || c === 5),
        `${what}: ${codes}`,
      ).toBe(true);
      expect(replies.length, what).toBeLessThanOrEqual(1);
    }
    // Many questions in one message: the first is judged, the reply is bounded.
    const many = dnsPacket.encode({
      ...query("a.example.test"),
      questions: Array.from({ length: 300 }, (_, i) => ({
        type: "A" as const,
        name: `q${i}.evil.test`,
        class: "IN" as const,
      })),
    });
    const [manyReply] = await udpExchange("127.0.0.1", [many], 300);
    expect(manyReply && rcode(dnsPacket.decode(manyReply))).toBe("REFUSED");
    expect(Date.now() - started).toBeLessThan(10_000);
    const after = await askTimed("127.0.0.1", "ok.example.test");
    expect(rcode(after.reply)).toBe("NOERROR");
  });

  it("closes TCP clients that send nothing, trickle a byte at a time, or promise more than they send", async () => {
    const silent = await tcpConnect();
    const trickler = await tcpConnect();
    // A length of 300 followed by a byte every 100 ms: each byte is activity, none completes a message.
    trickler.write(Buffer.from([0x01, 0x2c]));
    const trickle = setInterval(() => trickler.destroyed || trickler.write(Buffer.from([0x61])), 100);
    const liar = await tcpConnect();
    liar.write(Buffer.concat([Buffer.from([0xff, 0xff]), Buffer.alloc(10)]));
    try {
      const times = await Promise.all([silent, trickler, liar].map((s) => closedWithin(s, 3000)));
      for (const ms of times) expect(ms).toBeLessThan(2000);
    } finally {
      clearInterval(trickle);
    }
  });

  it("caps a sandbox's TCP connections; the next sandbox's TCP still works", async () => {
    const held = await Promise.all(Array.from({ length: 4 }, () => tcpConnect()));
    const extra = await Promise.all(Array.from({ length: 6 }, () => tcpConnect()));
    // Beyond the cap: closed at once, long before the idle time.
    for (const s of extra) expect(await closedWithin(s, 400)).toBeLessThan(400);
    // B has its own share.
    const b = await tcpConnect("127.0.0.2");
    const answer = await new Promise<DecodedPacket>((resolve, reject) => {
      let buf = Buffer.alloc(0);
      b.on("error", reject);
      b.on("data", (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) resolve(dnsPacket.decode(buf.subarray(2)));
      });
      b.write(dnsPacket.streamEncode(query("b.evil.test")));
    });
    expect(rcode(answer)).toBe("REFUSED");
    for (const s of [...held, b]) s.destroy();
  });

  it("keeps a pipelining TCP client that never reads its answers bounded", async () => {
    const s = await tcpConnect();
    // 500 questions in one go (denied names: answered at once, no upstream), and never read.
    const burst = Buffer.concat(
      Array.from({ length: 500 }, (_, i) => dnsPacket.streamEncode(query(`p${i}.evil.test`))),
    );
    s.pause();
    s.write(burst);
    await new Promise((r) => setTimeout(r, 500));
    // The agent still answers others meanwhile, and the connection is let go by its idle time.
    expect(rcode((await askTimed("127.0.0.2", "b.example.test")).reply)).toBe("NOERROR");
    // Read now: what was answered (no more than was asked), then the close (the server's idle time).
    let read = 0;
    s.on("data", (c: Buffer) => {
      read += c.length;
    });
    s.resume();
    expect(await closedWithin(s, 8000)).toBeLessThan(8000);
    expect(read).toBeLessThanOrEqual(burst.length + 500 * 64);
  });
});
