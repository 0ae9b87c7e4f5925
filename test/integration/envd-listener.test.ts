/**
 * envd's one-port listener for HTTP/1.1 and h2c, with real servers and real loopback sockets: each
 * protocol reaches its server with its first bytes intact, and an HTTP/1.1 request body that
 * nobody reads is held back by TCP backpressure instead of piling up in envd's memory.
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDualProtocolListener, type DualProtocolListener } from "../../agent/envd/http/listener.js";

const MiB = 1024 * 1024;

describe("envd dual-protocol listener", () => {
  let listener: DualProtocolListener;
  let port: number;
  /** Requests whose handler deliberately never reads the body, by request path. */
  const unread = new Map<string, http.IncomingMessage>();

  const h1 = http.createServer((req, res) => {
    if (req.url?.startsWith("/never-read/")) {
      unread.set(req.url, req);
      return;
    }
    const parts: Buffer[] = [];
    req.on("data", (c: Buffer) => parts.push(c));
    req.on("end", () => res.end(`h1 ${req.method} ${req.url} ${Buffer.concat(parts).toString()}`));
  });
  const h2 = http2.createServer((req, res) => res.end(`h2 ${req.method} ${req.url}`));

  beforeAll(async () => {
    listener = createDualProtocolListener(h1, async () => h2);
    await new Promise<void>((resolve) => listener.server.listen(0, "127.0.0.1", resolve));
    port = (listener.server.address() as net.AddressInfo).port;
  });

  afterAll(async () => {
    listener.destroyConnections();
    await new Promise<void>((resolve) => listener.server.close(() => resolve()));
  });

  it("gives HTTP/1.1 its first bytes back, with a body split across packets", async () => {
    const sock = net.connect(port, "127.0.0.1");
    await new Promise((resolve) => sock.once("connect", resolve));
    let reply = "";
    sock.on("data", (d: Buffer) => {
      reply += d.toString();
    });
    sock.write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello");
    await new Promise((resolve) => setTimeout(resolve, 50));
    sock.write(" world");
    await new Promise((resolve) => sock.once("close", resolve));
    expect(reply).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(reply.endsWith("h1 POST /echo hello world")).toBe(true);
  });

  it("hands a connection that starts with the HTTP/2 preface to the h2c server", async () => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const req = session.request({ ":path": "/over-h2" });
        let text = "";
        req.on("data", (d: Buffer) => {
          text += d.toString();
        });
        req.on("end", () => resolve(text));
        req.on("error", reject);
        req.end();
      });
      expect(body).toBe("h2 GET /over-h2");
    } finally {
      session.close();
    }
  });

  it("stops reading a connection whose request body nobody reads (10 connections)", async () => {
    const connections = 10;
    const offered = 64 * MiB;
    for (let i = 0; i < connections; i++) {
      const path = `/never-read/${i}`;
      const sock = net.connect(port, "127.0.0.1");
      await new Promise((resolve) => sock.once("connect", resolve));
      sock.on("error", () => {});
      // Headers alone first, as HTTP clients send them: the body follows in later packets.
      sock.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${offered}\r\n\r\n`);
      const chunk = Buffer.alloc(MiB, 97);
      const until = Date.now() + 300;
      for (let sent = 0; sent < offered && Date.now() < until; sent += MiB) {
        if (!sock.write(chunk)) {
          await new Promise((resolve) => {
            const timer = setTimeout(resolve, 50);
            sock.once("drain", () => {
              clearTimeout(timer);
              resolve(undefined);
            });
          });
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      const req = unread.get(path);
      sock.destroy();
      expect(req, `request ${i} reached the handler`).toBeDefined();
      // A paused request holds about one highWaterMark plus one socket read; without backpressure
      // it holds everything the client managed to send (tens of MiB here).
      expect(req?.readableLength ?? Number.POSITIVE_INFINITY, `bytes buffered in request ${i}`).toBeLessThan(MiB);
      expect(req?.socket.bytesRead ?? Number.POSITIVE_INFINITY, `bytes read from connection ${i}`).toBeLessThan(
        16 * MiB,
      );
    }
  });
});
