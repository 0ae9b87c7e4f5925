import http from "node:http";
import type http2 from "node:http2";
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { createDualProtocolListener } from "./listener.js";

// envd's listener with short bounds: slow and silent clients are cut, a quiet stream is not.

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

async function start(handler: http.RequestListener): Promise<number> {
  const h1 = http.createServer({ requestTimeout: 0, headersTimeout: 300, connectionsCheckingInterval: 50 }, handler);
  const h2 = () => Promise.reject(new Error("no h2 here")) as Promise<http2.Http2Server>;
  const { server, destroyConnections } = createDualProtocolListener(h1, h2, {
    firstBytesTimeoutMs: 300,
    maxConnections: 2,
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        destroyConnections();
        h1.close();
      }),
  );
  return (server.address() as net.AddressInfo).port;
}

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
    setTimeout(() => reject(new Error(`still open; got ${JSON.stringify(text)}`)), 5_000).unref();
  });
}

describe("envd's dual-protocol listener", () => {
  it("closes a connection that sends nothing, and one that sends half a head", async () => {
    const port = await start((_req, res) => res.end("ok"));
    const silent = await exchange(port, "");
    expect(silent.text).toBe("");
    expect(silent.ms).toBeLessThan(2_000);
    const half = await exchange(port, "GET /health HTTP/1.1\r\nhost: x\r\n");
    expect(half.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(half.ms).toBeLessThan(2_000);
  });

  it("keeps a stream that stays quiet far longer than the head deadline", async () => {
    const port = await start((_req, res) => {
      res.write("first ");
      setTimeout(() => res.end("last"), 1_200);
    });
    const res = await fetch(`http://127.0.0.1:${port}/stream`);
    expect(await res.text()).toBe("first last");
  });

  it("closes connections beyond its cap as they arrive", async () => {
    const port = await start((_req, res) => res.end("ok"));
    const held = [net.connect(port, "127.0.0.1"), net.connect(port, "127.0.0.1")];
    await Promise.all(held.map((s) => new Promise((r) => s.once("connect", r))));
    await new Promise((r) => setTimeout(r, 50));
    const third = await exchange(port, "GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    expect(third.text).toBe("");
    expect(third.ms).toBeLessThan(250);
    for (const s of held) s.destroy();
  });
});
