import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createExec } from "../exec.js";
import { noopLogger } from "../logger.js";
import { detach, type HandOver, SpliceRelay } from "./splice-relay.js";

/**
 * The kernel relay with real sockets on loopback: "guest" ↔ client (accepted by a front listener, as
 * the proxy's) and upstream (dialled by the test, as the proxy does) ↔ "origin". Each pair is handed
 * to the relay the way the proxy does, and the test talks from the guest and origin ends.
 */

let dir: string;
let relay: SpliceRelay;
let front: Server;
let back: Server;

const portOf = (s: Server) => (s.address() as { port: number }).port;
const listen = async (s: Server) => new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));

interface Pair {
  guest: Socket;
  client: Socket;
  upstream: Socket;
  origin: Socket;
}

async function pair(): Promise<Pair> {
  const accepted = new Promise<Socket>((r) => front.once("connection", r));
  const guest = connect({ host: "127.0.0.1", port: portOf(front), allowHalfOpen: true });
  const client = await accepted;
  const originAccepted = new Promise<Socket>((r) => back.once("connection", r));
  const upstream = connect({ host: "127.0.0.1", port: portOf(back), allowHalfOpen: true });
  // As the proxy: paused in the connect handler, before Node's first read of it.
  await new Promise<void>((r) => upstream.once("connect", () => r(void upstream.pause())));
  const origin = await originAccepted;
  for (const s of [guest, client, upstream, origin]) s.on("error", () => {});
  return { guest, client, upstream, origin };
}

const noHandOver: HandOver = {
  toUpstream: Buffer.alloc(0),
  toClient: Buffer.alloc(0),
  clientEnded: false,
  upstreamEnded: false,
};

/** Hands a pair to the relay as the proxy does; fails the test when the relay does not take it. */
async function handOver(p: Pair, h: HandOver = noHandOver) {
  const fromClient = detach(p.client);
  const fromUpstream = detach(p.upstream);
  const connection = await relay.take(p.client, p.upstream, {
    ...h,
    toUpstream: Buffer.concat([h.toUpstream, fromClient]),
    toClient: Buffer.concat([h.toClient, fromUpstream]),
  });
  if (!connection) throw new Error("the relay did not take the connection");
  p.client.destroy();
  p.upstream.destroy();
  return connection;
}

/** Everything a socket receives until its FIN, hashed, with the byte count. */
function receive(s: Socket): Promise<{ bytes: number; sha: string }> {
  return new Promise((resolve) => {
    const hash = createHash("sha256");
    let bytes = 0;
    s.on("data", (c: Buffer) => {
      bytes += c.length;
      hash.update(c);
    });
    s.once("end", () => resolve({ bytes, sha: hash.digest("hex") }));
  });
}

/** Writes `mib` MiB of one random MiB repeated, then (unless told not to) a FIN; the expected hash. */
function send(s: Socket, mib: number, end = true): Promise<string> {
  const block = randomBytes(2 ** 20);
  const hash = createHash("sha256");
  return new Promise((resolve) => {
    let sent = 0;
    const more = () => {
      while (sent < mib) {
        sent++;
        hash.update(block);
        if (!s.write(block)) {
          s.once("drain", more);
          return;
        }
      }
      if (end) s.end();
      resolve(hash.digest("hex"));
    };
    more();
  });
}

async function fdCount(pid: number | "self"): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "wrenn-relay-"));
  relay = new SpliceRelay({ exec: createExec(noopLogger), logger: noopLogger, dir, restartDelayMs: 50 });
  expect(await relay.start()).toBe(true);
  front = createServer({ allowHalfOpen: true, pauseOnConnect: true });
  back = createServer({ allowHalfOpen: true });
  await Promise.all([listen(front), listen(back)]);
}, 120_000);

afterAll(async () => {
  await relay?.close();
  front?.close();
  back?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("SpliceRelay", () => {
  it("moves large transfers both ways at once, byte-exact, and reports the counts", async () => {
    const p = await pair();
    const connection = await handOver(p);
    const atOrigin = receive(p.origin);
    const atGuest = receive(p.guest);
    const [sentUp, sentDown] = await Promise.all([send(p.guest, 48), send(p.origin, 64)]);
    expect(await atOrigin).toEqual({ bytes: 48 * 2 ** 20, sha: sentUp });
    expect(await atGuest).toEqual({ bytes: 64 * 2 ** 20, sha: sentDown });
    expect(await connection.done).toEqual({ bytesOut: 48 * 2 ** 20, bytesIn: 64 * 2 ** 20, cut: false });
  }, 60_000);

  it("sends the handed-over bytes first and passes on a FIN the agent had already read", async () => {
    const p = await pair();
    const atOrigin = receive(p.origin);
    const connection = await handOver(p, {
      toUpstream: Buffer.from("head;"),
      toClient: Buffer.from("early;"),
      clientEnded: true,
      upstreamEnded: false,
    });
    expect((await atOrigin).bytes).toBe(5);
    const atGuest = receive(p.guest);
    p.origin.end("answer");
    expect((await atGuest).bytes).toBe("early;answer".length);
    expect(await connection.done).toEqual({ bytesOut: 5, bytesIn: 12, cut: false });
  });

  it("takes a pair whose upstream still connects: the head goes out at the connect; a refused one is left to the caller", async () => {
    // Connecting: the relay sends the head once the origin accepts.
    const accepted = new Promise<Socket>((r) => front.once("connection", r));
    const guest = connect({ host: "127.0.0.1", port: portOf(front), allowHalfOpen: true });
    const client = await accepted;
    const originAccepted = new Promise<Socket>((r) => back.once("connection", r));
    const upstream = connect({ host: "127.0.0.1", port: portOf(back), allowHalfOpen: true });
    upstream.pause();
    for (const s of [guest, client, upstream]) s.on("error", () => {});
    await new Promise((r) => process.nextTick(r));
    detach(client);
    const connection = await relay.take(client, upstream, {
      ...noHandOver,
      toUpstream: Buffer.from("hello"),
      connecting: true,
    });
    expect(connection).toBeDefined();
    const origin = await originAccepted;
    const atOrigin = receive(origin);
    guest.end();
    expect((await atOrigin).bytes).toBe(5);
    await new Promise<void>((r) => (upstream.connecting ? upstream.once("connect", () => r()) : r()));
    client.destroy();
    upstream.destroy();
    origin.end();
    expect(await connection?.done).toEqual({ bytesOut: 5, bytesIn: 0, cut: false });

    // Refused: the relay answers X, and the caller's client socket still works.
    const closed = createServer();
    await listen(closed);
    const refusedPort = portOf(closed);
    await new Promise((r) => closed.close(r));
    const accepted2 = new Promise<Socket>((r) => front.once("connection", r));
    const guest2 = connect({ host: "127.0.0.1", port: portOf(front), allowHalfOpen: true });
    const client2 = await accepted2;
    const upstream2 = connect({ host: "127.0.0.1", port: refusedPort });
    upstream2.pause();
    for (const s of [guest2, client2, upstream2]) s.on("error", () => {});
    await new Promise((r) => process.nextTick(r));
    detach(client2);
    const refused = await relay.take(client2, upstream2, {
      ...noHandOver,
      toUpstream: Buffer.from("x"),
      connecting: true,
    });
    expect(await refused?.done).toEqual({ bytesOut: 0, bytesIn: 0, cut: false, refused: true });
    const atGuest = receive(guest2);
    client2.end("502");
    expect((await atGuest).bytes).toBe(3);
    for (const s of [guest, guest2, client2, upstream2, origin]) s.destroy();
  });

  it("passes a guest's FIN on while the answer keeps flowing (half-close)", async () => {
    const p = await pair();
    const connection = await handOver(p);
    const atOrigin = receive(p.origin);
    const atGuest = receive(p.guest);
    p.guest.end("request");
    expect((await atOrigin).bytes).toBe(7);
    // After the guest's FIN the origin still answers, 8 MiB of it.
    const sha = await send(p.origin, 8);
    expect(await atGuest).toEqual({ bytes: 8 * 2 ** 20, sha });
    expect(await connection.done).toMatchObject({ bytesOut: 7, bytesIn: 8 * 2 ** 20 });
  });

  it("passes an origin's FIN on while the guest keeps sending (half-close the other way)", async () => {
    const p = await pair();
    const connection = await handOver(p);
    const atGuest = receive(p.guest);
    const atOrigin = receive(p.origin);
    p.origin.end("bye");
    expect((await atGuest).bytes).toBe(3);
    const sha = await send(p.guest, 8);
    expect(await atOrigin).toEqual({ bytes: 8 * 2 ** 20, sha });
    expect(await connection.done).toMatchObject({ bytesOut: 8 * 2 ** 20, bytesIn: 3 });
  });

  it("resets the other side when one side resets", async () => {
    const p = await pair();
    const connection = await handOver(p);
    p.guest.write("x");
    await new Promise<void>((r) => p.origin.once("data", () => r()));
    const originError = new Promise<string | undefined>((r) => {
      p.origin.once("error", (err: NodeJS.ErrnoException) => r(err.code));
      p.origin.once("close", () => r(undefined));
    });
    p.guest.resetAndDestroy();
    expect(await originError).toBe("ECONNRESET");
    expect(await connection.done).toMatchObject({ bytesOut: 1, bytesIn: 0, cut: false });
  });

  it("is started again when it dies: the connections it held are cut, the agent lives on", async () => {
    const p = await pair();
    const connection = await handOver(p);
    // Its side of the guest's connection is closed with it: a FIN (the guest sent nothing unread).
    const guestEnded = new Promise<void>((r) => p.guest.once("end", () => r()));
    // The origin's side: a FIN, or a reset when data was still unread there.
    const originClosed = new Promise<void>((r) => {
      p.origin.once("end", () => r());
      p.origin.once("close", () => r());
    });
    // Mid-transfer: the origin streams without end while the relay is killed.
    const block = Buffer.alloc(2 ** 16);
    const streaming = setInterval(() => p.origin.writable && p.origin.write(block), 1);
    p.guest.on("data", () => {});
    await new Promise((r) => setTimeout(r, 100));
    const pid = relay.pid;
    expect(pid).toBeGreaterThan(0);
    process.kill(pid as number, "SIGKILL");
    const result = await connection.done;
    clearInterval(streaming);
    expect(result.cut).toBe(true);
    await Promise.all([guestEnded, originClosed]);
    for (let i = 0; i < 100 && !relay.available; i++) await new Promise((r) => setTimeout(r, 20));
    expect(relay.available).toBe(true);
    expect(relay.pid).not.toBe(pid);
    // The new relay works.
    const q = await pair();
    const again = await handOver(q);
    const atOrigin = receive(q.origin);
    q.guest.end("after");
    expect((await atOrigin).bytes).toBe(5);
    q.origin.end();
    expect(await again.done).toMatchObject({ bytesOut: 5, bytesIn: 0, cut: false });
  });

  it("leaves no descriptor behind in the agent or the relay after 500 connections", async () => {
    const settle = async () => {
      for (let i = 0; i < 50 && relay.held > 0; i++) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 50));
    };
    await settle();
    const pid = relay.pid as number;
    const before = { agent: await fdCount("self"), relay: await fdCount(pid) };
    for (let batch = 0; batch < 10; batch++) {
      // Made one by one (each waits for its own accept), then all 50 exchange at once.
      const held = [];
      for (let i = 0; i < 50; i++) {
        const p = await pair();
        held.push({ p, connection: await handOver(p) });
      }
      await Promise.all(
        held.map(async ({ p, connection }, i) => {
          const atOrigin = receive(p.origin);
          const atGuest = receive(p.guest);
          // Half of them end by FINs both ways, half by a reset.
          if (i % 2 === 0) {
            p.guest.end("ping");
            await atOrigin;
            p.origin.end("pong");
            await atGuest;
          } else {
            p.guest.write("ping");
            p.origin.resetAndDestroy();
          }
          await connection.done;
          p.guest.destroy();
          p.origin.destroy();
        }),
      );
    }
    await settle();
    expect(relay.held).toBe(0);
    expect(relay.pid).toBe(pid);
    expect(await fdCount(pid)).toBe(before.relay);
    expect(await fdCount("self")).toBeLessThanOrEqual(before.agent);
  }, 60_000);

  it("kills a relay that does not answer a hand-over, leaving the connection to the caller, and starts it again", async () => {
    const stuck = new SpliceRelay({
      exec: createExec(noopLogger),
      logger: noopLogger,
      dir,
      answerTimeoutMs: 300,
      restartDelayMs: 50,
    });
    expect(await stuck.start()).toBe(true);
    try {
      const pid = stuck.pid as number;
      process.kill(pid, "SIGSTOP");
      const p = await pair();
      expect(await stuck.take(p.client, p.upstream, noHandOver)).toBeUndefined();
      // Still the caller's, and whole: it relays in Node.
      p.client.pipe(p.upstream);
      p.client.resume();
      const atOrigin = receive(p.origin);
      p.guest.end("still");
      expect((await atOrigin).bytes).toBe(5);
      for (let i = 0; i < 100 && !stuck.available; i++) await new Promise((r) => setTimeout(r, 20));
      expect(stuck.available).toBe(true);
      expect(stuck.pid).not.toBe(pid);
      for (const s of [p.guest, p.origin, p.client, p.upstream]) s.destroy();
    } finally {
      await stuck.close();
    }
  });

  it("declines beyond its connection bound, leaving the sockets to the caller", async () => {
    const small = new SpliceRelay({ exec: createExec(noopLogger), logger: noopLogger, dir, maxConnections: 1 });
    expect(await small.start()).toBe(true);
    try {
      const a = await pair();
      const b = await pair();
      const first = await small.take(a.client, a.upstream, noHandOver);
      expect(first).toBeDefined();
      a.client.destroy();
      a.upstream.destroy();
      expect(await small.take(b.client, b.upstream, noHandOver)).toBeUndefined();
      // Still the caller's: b relays in Node.
      b.client.pipe(b.upstream);
      b.client.resume();
      const atOrigin = receive(b.origin);
      b.guest.end("node");
      expect((await atOrigin).bytes).toBe(4);
      for (const s of [a.guest, a.origin, b.guest, b.origin, b.client, b.upstream]) s.destroy();
      await first?.done;
    } finally {
      await small.close();
    }
  });
});
