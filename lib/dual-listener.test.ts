import { mkdtemp, readFile, rm } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterEach, describe, expect, it } from "vitest";
import {
  createDualListener,
  createDualTlsListener,
  type DualListenerOptions,
  H2_PREFACE,
  type TlsIdentity,
} from "./dual-listener.js";

// The one "HTTP/1.1 and HTTP/2 on one port" of the agent and envd, over real loopback sockets: the
// preface may come in any number of TCP segments, silent and slow clients are cut, quiet streams are not.

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** Answers with the protocol version the request came in on, then its method `quietMs` later. */
const handler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => {
  const quietMs = Number(new URL(req.url ?? "/", "http://x").searchParams.get("quietMs") ?? 0);
  // Both response types have write and end; TypeScript cannot call a union of their overloads.
  const reply = res as http.ServerResponse;
  reply.write(`${req.httpVersion} `);
  setTimeout(() => reply.end(req.method ?? ""), quietMs);
};

/** Starts a listener on loopback; `h2Asked` counts how often a lazy HTTP/2 server was asked for. */
async function start(
  options: Partial<DualListenerOptions> = {},
  how: { lazy?: boolean; tls?: TlsIdentity } = {},
): Promise<{ port: number; h2Asked: () => number }> {
  const h1 = http.createServer({ requestTimeout: 0, headersTimeout: 300, connectionsCheckingInterval: 50 }, handler);
  const h2 = http2.createServer({}, handler);
  let asked = 0;
  const h2Source = how.lazy
    ? () => {
        asked += 1;
        return Promise.resolve(h2);
      }
    : h2;
  const bounds = { firstBytesTimeoutMs: 300, maxConnections: 8, ...options };
  const { server, destroyConnections } = how.tls
    ? await createDualTlsListener(h1, h2Source, { ...bounds, tls: how.tls })
    : createDualListener(h1, h2Source, bounds);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        destroyConnections();
        h1.close();
        h2.close();
      }),
  );
  return { port: (server.address() as net.AddressInfo).port, h2Asked: () => asked };
}

/**
 * A loopback relay to `port` that forwards the client's first bytes in separate TCP segments, cut at
 * `cuts` (offsets), each written after a pause so that the listener reads them one at a time.
 */
async function splittingRelay(port: number, cuts: number[]): Promise<number> {
  const relay = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    upstream.setNoDelay(true);
    client.setNoDelay(true);
    let sent = 0;
    let chain = Promise.resolve();
    client.on("data", (chunk: Buffer) => {
      client.pause();
      chain = chain.then(async () => {
        let at = 0;
        while (at < chunk.length) {
          const nextCut = cuts.find((c) => c > sent + at);
          const end = nextCut === undefined ? chunk.length : Math.min(chunk.length, nextCut - sent);
          upstream.write(chunk.subarray(at, end));
          at = end;
          if (nextCut !== undefined) await new Promise((r) => setTimeout(r, 15));
        }
        sent += chunk.length;
        client.resume();
      });
    });
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", () => resolve()));
  closers.push(() => new Promise<void>((resolve) => relay.close(() => resolve())));
  return (relay.address() as net.AddressInfo).port;
}

/** A response body as text, once it has ended. */
function textOf(body: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    body.setEncoding("utf8");
    body.on("data", (d: string) => {
      text += d;
    });
    body.on("end", () => resolve(text));
    body.on("error", reject);
  });
}

/** One HTTP/2 request on `session`, whose errors fail it too. */
function h2Request(session: http2.ClientHttp2Session, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    session.once("error", reject);
    textOf(session.request({ ":path": path })).then(resolve, reject);
  });
}

/** One HTTP/2 request on a new connection: h2c with prior knowledge (as Connect and gRPC clients make it), or TLS. */
async function h2Get(port: number, path = "/", ca?: Buffer): Promise<string> {
  const session = http2.connect(`${ca ? "https" : "http"}://127.0.0.1:${port}`, ca ? { ca } : {});
  try {
    return await h2Request(session, path);
  } finally {
    session.close();
  }
}

/** Writes `bytes` on a raw connection and collects what comes back until the server closes it. */
function exchange(port: number, bytes: string): Promise<{ text: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = net.connect(port, "127.0.0.1");
    let text = "";
    socket.on("data", (d) => {
      text += d.toString();
    });
    socket.on("error", () => {});
    socket.on("close", () => resolve({ text, ms: Date.now() - started }));
    if (bytes !== "") socket.write(bytes);
    setTimeout(() => {
      socket.destroy();
      reject(new Error(`still open; got ${JSON.stringify(text)}`));
    }, 5_000).unref();
  });
}

const everyByte = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

describe("the dual-protocol listener", () => {
  it("serves HTTP/1.1 and h2c on one port", async () => {
    const { port } = await start();
    const res = await fetch(`http://127.0.0.1:${port}/`);
    expect(await res.text()).toBe("1.1 GET");
    expect(await h2Get(port)).toBe("2.0 GET");
  });

  it("answers HTTP/2 when the preface arrives in several segments", async () => {
    const { port } = await start();
    const relay = await splittingRelay(port, [1, 3, 10, 17, 23]);
    expect(await h2Get(relay)).toBe("2.0 GET");
  });

  it("answers HTTP/2 when the preface arrives byte by byte, and loads the HTTP/2 server once", async () => {
    const { port, h2Asked } = await start({}, { lazy: true });
    expect(h2Asked()).toBe(0);
    const relay = await splittingRelay(port, everyByte(H2_PREFACE.length));
    expect(await h2Get(relay)).toBe("2.0 GET");
    expect(await h2Get(port)).toBe("2.0 GET");
    expect(h2Asked()).toBe(1);
  });

  it("answers HTTP/1.1 whose first bytes come one by one, also a method that starts like the preface", async () => {
    const { port } = await start();
    // One byte a segment up to where PROPFIND and the preface part ("PR" then "O" against "I"), then
    // larger pieces: the head as a whole must still beat the HTTP/1.1 server's 300 ms headersTimeout.
    const relay = await splittingRelay(port, [1, 2, 3, 4, 9, 20]);
    const propfind = await exchange(relay, "PROPFIND /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    expect(propfind.text).toMatch(/^HTTP\/1\.1 200 [\s\S]*\r\n1\.1 \r\n[\s\S]*PROPFIND/);
    const get = await exchange(relay, "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    expect(get.text).toMatch(/^HTTP\/1\.1 200 [\s\S]*\r\n1\.1 \r\n[\s\S]*GET/);
  });

  it("closes a connection that sends nothing, half a preface, or half a head", async () => {
    const { port } = await start();
    const silent = await exchange(port, "");
    expect(silent.text).toBe("");
    expect(silent.ms).toBeGreaterThanOrEqual(250);
    expect(silent.ms).toBeLessThan(2_000);
    const halfPreface = await exchange(port, "PRI * HTTP/2.0\r\n");
    expect(halfPreface.text).toBe("");
    expect(halfPreface.ms).toBeLessThan(2_000);
    // After the choice the HTTP/1.1 server's own headersTimeout applies: 408.
    const halfHead = await exchange(port, "GET / HTTP/1.1\r\nhost: x\r\n");
    expect(halfHead.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(halfHead.ms).toBeLessThan(2_000);
  });

  it("keeps a stream that stays quiet far longer than the head deadline, on either protocol", async () => {
    const { port } = await start();
    const res = await fetch(`http://127.0.0.1:${port}/?quietMs=1000`);
    expect(await res.text()).toBe("1.1 GET");
    expect(await h2Get(port, "/?quietMs=1000")).toBe("2.0 GET");
  });

  it("closes connections beyond its cap as they arrive", async () => {
    const { port } = await start({ maxConnections: 2 });
    const held = [net.connect(port, "127.0.0.1"), net.connect(port, "127.0.0.1")];
    await Promise.all(held.map((s) => new Promise((r) => s.once("connect", r))));
    await new Promise((r) => setTimeout(r, 50));
    const third = await exchange(port, "GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    expect(third.text).toBe("");
    expect(third.ms).toBeLessThan(250);
    for (const s of held) s.destroy();
  });

  it("closes an HTTP/2 connection idle for h2IdleTimeoutMs, not one with an open stream", async () => {
    const { port } = await start({ h2IdleTimeoutMs: 200 });
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", () => {});
    const closed = new Promise<number>((resolve) => session.once("close", () => resolve(Date.now())));
    const streamStarted = Date.now();
    const body = await h2Request(session, "/?quietMs=600");
    expect(body).toBe("2.0 GET");
    expect(Date.now() - streamStarted).toBeGreaterThanOrEqual(550);
    const closedAt = await closed;
    expect(closedAt - streamStarted).toBeLessThan(3_000);
  });

  it("lets ALPN choose with TLS", async () => {
    const dir = await mkdtemp(join(tmpdir(), "wrenn-dual-listener-"));
    closers.push(() => rm(dir, { recursive: true, force: true }));
    const [certFile, keyFile] = [join(dir, "cert.pem"), join(dir, "key.pem")];
    // A throwaway P-256 certificate for 127.0.0.1.
    const request = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost";
    await execa(
      "openssl",
      [...request.split(" "), "-addext", "subjectAltName=IP:127.0.0.1"].concat(["-keyout", keyFile, "-out", certFile]),
    );
    const [cert, key] = await Promise.all([readFile(certFile), readFile(keyFile)]);
    const { port } = await start({}, { tls: { cert, key } });
    const h1 = await new Promise<string>((resolve, reject) => {
      https.get({ host: "127.0.0.1", port, path: "/", ca: cert }, (res) => resolve(textOf(res))).on("error", reject);
    });
    expect(h1).toBe("1.1 GET");
    expect(await h2Get(port, "/", cert)).toBe("2.0 GET");
  });
});
