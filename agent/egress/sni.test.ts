import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { describe, expect, it } from "vitest";
import { parseFirstBytes, parseHttpHost, parseTlsClientHello } from "./sni.js";

/** The first bytes a client sends to a loopback server that never answers (a real ClientHello). */
async function capture(start: (port: number) => () => void): Promise<Buffer> {
  let stop: (() => void) | undefined;
  const bytes = await new Promise<Buffer>((resolve, reject) => {
    const server = createServer((socket) => {
      let got = Buffer.alloc(0);
      const timer = setTimeout(() => {
        socket.destroy();
        server.close();
        resolve(got);
      }, 300);
      socket.on("data", (c: Buffer) => {
        got = Buffer.concat([got, c]);
        // A complete ClientHello record (or more) is in: done.
        if (got.length >= 5 && got.length >= 5 + got.readUInt16BE(3)) {
          clearTimeout(timer);
          socket.destroy();
          server.close();
          resolve(got);
        }
      });
    });
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      if (typeof address === "object" && address) stop = start(address.port);
    });
  });
  stop?.();
  return bytes;
}

const nodeHello = (servername: string | undefined) =>
  capture((port) => {
    const s = tlsConnect({ host: "127.0.0.1", port, servername, rejectUnauthorized: false });
    s.on("error", () => {});
    return () => s.destroy();
  });

/** Splits a buffer into pieces of `size` bytes, feeding them as TCP segments would arrive. */
function feedInPieces(buf: Buffer, size: number) {
  const results = [];
  for (let end = size; end < buf.length + size; end += size) {
    results.push(parseFirstBytes(buf.subarray(0, Math.min(end, buf.length))));
  }
  return results;
}

/** Re-frames one TLS record's handshake payload into several records of at most `size` bytes. */
function splitIntoRecords(hello: Buffer, size: number): Buffer {
  const payload = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const records: Buffer[] = [];
  for (let p = 0; p < payload.length; p += size) {
    const chunk = payload.subarray(p, p + size);
    const header = Buffer.from([0x16, 0x03, 0x01, 0, 0]);
    header.writeUInt16BE(chunk.length, 3);
    records.push(header, chunk);
  }
  return Buffer.concat(records);
}

describe("TLS ClientHello", () => {
  it("reads the SNI of node's ClientHello, and none when it sends none", async () => {
    const hello = await nodeHello("a.example.test");
    expect(parseFirstBytes(hello)).toEqual({ kind: "tls", name: "a.example.test" });
    // Node sends no SNI for an IP address.
    expect(parseTlsClientHello(await nodeHello(undefined))).toEqual({ kind: "tls", name: undefined });
  });

  it("waits for a ClientHello split over TCP segments, then reads it", async () => {
    const hello = await nodeHello("Split.Example.Test.");
    const results = feedInPieces(hello, 7);
    expect(results.slice(0, -1).every((r) => r.kind === "incomplete")).toBe(true);
    expect(results.at(-1)).toEqual({ kind: "tls", name: "split.example.test" });
  });

  it("reassembles a ClientHello split over several TLS records", async () => {
    const hello = await nodeHello("records.example.test");
    const framed = splitIntoRecords(hello, 50);
    expect(parseFirstBytes(framed)).toEqual({ kind: "tls", name: "records.example.test" });
    expect(parseFirstBytes(framed.subarray(0, framed.length - 1))).toEqual({ kind: "incomplete" });
  });

  it.skipIf(spawnSync("openssl", ["version"]).status !== 0)("reads the SNI of openssl s_client", async () => {
    const hello = await capture((port) => {
      const child = spawn("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "b.example.test"], {
        stdio: ["pipe", "ignore", "ignore"],
      });
      return () => child.kill();
    });
    expect(parseFirstBytes(hello)).toEqual({ kind: "tls", name: "b.example.test" });
  });

  it("calls other bytes that start like a handshake 'other', never throws on garbage", async () => {
    expect(parseFirstBytes(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00]))).toEqual({ kind: "other" });
    expect(parseFirstBytes(Buffer.from([0x16, 0x02]))).toEqual({ kind: "incomplete" });
    expect(parseFirstBytes(Buffer.from([0x16, 0x04, 0, 0, 1, 1]))).toEqual({ kind: "other" });
    const hello = await nodeHello("a.example.test");
    for (let i = 5; i < hello.length; i += 3) {
      const broken = Buffer.from(hello);
      broken[i] = 0xff;
      expect(() => parseFirstBytes(broken)).not.toThrow();
    }
    for (let n = 0; n < 200; n++) {
      const random = Buffer.from(Array.from({ length: 64 }, () => Math.floor(Math.random() * 256)));
      random[0] = 0x16;
      random[1] = 0x03;
      expect(() => parseFirstBytes(random)).not.toThrow();
    }
  });
});

describe("HTTP Host", () => {
  const req = (head: string) => Buffer.from(head, "latin1");

  it("reads the Host header and strips its port", () => {
    expect(parseHttpHost(req("GET / HTTP/1.1\r\nUser-Agent: x\r\nHost: A.Example.Test:8080\r\n\r\n"))).toEqual({
      kind: "http",
      name: "a.example.test",
    });
    expect(parseHttpHost(req("GET / HTTP/1.1\r\nhost:b.example.test\r\n\r\n"))).toEqual({
      kind: "http",
      name: "b.example.test",
    });
    expect(parseHttpHost(req("GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n"))).toEqual({
      kind: "http",
      name: "[2001:db8::1]",
    });
    expect(parseHttpHost(req("GET / HTTP/1.0\r\n\r\n"))).toEqual({ kind: "http", name: undefined });
    // Not a host name: judged as if none was given (by the address).
    expect(parseHttpHost(req("GET / HTTP/1.1\r\nHost: a b\u00ff\r\n\r\n"))).toEqual({ kind: "http", name: undefined });
    expect(parseHttpHost(req(`GET / HTTP/1.1\r\nHost: ${"a".repeat(300)}\r\n\r\n`))).toEqual({
      kind: "http",
      name: undefined,
    });
  });

  it("waits for more of a head split over segments", () => {
    const head = "POST /upload HTTP/1.1\r\nContent-Length: 3\r\nHost: c.example.test\r\n\r\nabc";
    for (let n = 1; n < head.indexOf("Host"); n++) {
      expect(parseFirstBytes(req(head.slice(0, n)))).toEqual({ kind: "incomplete" });
    }
    expect(parseFirstBytes(req(head))).toEqual({ kind: "http", name: "c.example.test" });
  });

  it("calls a non-HTTP protocol 'other'", () => {
    expect(parseFirstBytes(req("SSH-2.0-OpenSSH_9.2\r\n"))).toEqual({ kind: "other" });
    expect(parseFirstBytes(Buffer.from([0, 1, 2, 3]))).toEqual({ kind: "other" });
  });
});
