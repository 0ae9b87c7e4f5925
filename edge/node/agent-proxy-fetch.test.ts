import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createServer as createTcpServer, type Server as TcpServer } from "node:net";
import { PassThrough } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { BadUpstreamResponse } from "../proxy/errors.js";
import { createAgentProxyFetch } from "./agent-proxy-fetch.js";
import { webStreamOf } from "./streams.js";

let server: Server | undefined;

afterEach(async () => {
  const s = server;
  server = undefined;
  if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
});

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const s = createServer(handler);
  server = s;
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", () => resolve()));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      const chunk = chunks[i++];
      if (chunk) controller.enqueue(chunk);
      else controller.close();
    },
  });
}

describe("createAgentProxyFetch", () => {
  it("streams a request body and a response body byte for byte, headers and status intact", async () => {
    const base = await listen((req, res) => {
      const hash = createHash("sha256");
      let size = 0;
      req.on("data", (chunk: Buffer) => {
        hash.update(chunk);
        size += chunk.length;
      });
      req.on("end", () => {
        res.writeHead(201, { "x-size": String(size), "set-cookie": ["a=1", "b=2"] });
        // Echo the body's digest, then a large body of its own.
        res.write(hash.digest("hex"));
        res.end(Buffer.alloc(3 * 1024 * 1024, 7));
      });
    });
    const chunks = Array.from({ length: 40 }, (_, i) => new Uint8Array(100_000).fill(i));
    const expected = createHash("sha256");
    for (const c of chunks) expected.update(c);
    const res = await createAgentProxyFetch()(`${base}/upload?x=1`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: streamOf(chunks),
    });
    expect(res.status).toBe(201);
    expect(res.headers.get("x-size")).toBe("4000000");
    expect(res.headers.get("set-cookie")).toBe("a=1, b=2");
    const body = new Uint8Array(await res.arrayBuffer());
    expect(new TextDecoder().decode(body.subarray(0, 64))).toBe(expected.digest("hex"));
    expect(body.length).toBe(64 + 3 * 1024 * 1024);
    expect(body.subarray(64).every((b) => b === 7)).toBe(true);
  });

  it("rejects with the source's error and aborts the upstream request when the body stream fails", async () => {
    let upstreamSawAbort = false;
    let sawData: () => void = () => {};
    const dataArrived = new Promise<void>((resolve) => {
      sawData = resolve;
    });
    const base = await listen((req, res) => {
      req.on("data", () => sawData());
      req.on("error", () => {});
      req.on("close", () => {
        if (!req.complete) upstreamSawAbort = true;
      });
      req.on("end", () => res.end("complete"));
    });
    const failure = new Error("over the limit");
    let sent = 0;
    // Fails only once the upstream has received part of the body, as an upload over its limit does.
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent++ < 2) controller.enqueue(new Uint8Array(1000));
        else {
          await dataArrived;
          controller.error(failure);
        }
      },
    });
    await expect(createAgentProxyFetch()(`${base}/`, { method: "POST", body })).rejects.toThrow("over the limit");
    await expect.poll(() => upstreamSawAbort).toBe(true);
  });

  it("rejects when the agent is unreachable and when the signal aborts", async () => {
    const proxyFetch = createAgentProxyFetch();
    const base = await listen(() => {
      // never answers
    });
    // Port 1 has no listener on loopback.
    await expect(proxyFetch("http://127.0.0.1:1/", { method: "GET" })).rejects.toThrow(/ECONNREFUSED/);
    const controller = new AbortController();
    const pending = proxyFetch(`${base}/`, { method: "GET", signal: controller.signal });
    controller.abort(new Error("client went away"));
    await expect(pending).rejects.toThrow("client went away");
  });

  it("gives a null body for 204 and reuses kept-alive connections", async () => {
    const ports = new Set<number>();
    const base = await listen((req, res) => {
      ports.add(req.socket.remotePort ?? 0);
      res.writeHead(204);
      res.end();
    });
    const proxyFetch = createAgentProxyFetch();
    for (let i = 0; i < 3; i++) {
      const res = await proxyFetch(`${base}/`, { method: "DELETE" });
      expect(res.status).toBe(204);
      expect(res.body).toBeNull();
    }
    expect(ports.size).toBe(1);
  });
});

/** A raw TCP server that answers every request with `answer` and closes: no HTTP library in the way. */
async function rawServer(answer: string): Promise<{ base: string; server: TcpServer }> {
  const tcp = createTcpServer((socket) => {
    socket.on("error", () => {});
    socket.once("data", () => socket.end(Buffer.from(answer, "latin1")));
  });
  await new Promise<void>((resolve) => tcp.listen(0, "127.0.0.1", () => resolve()));
  return { base: `http://127.0.0.1:${(tcp.address() as AddressInfo).port}`, server: tcp };
}

describe("createAgentProxyFetch with a hostile answer", () => {
  // Today's main built the Response inside the socket's "response" listener: a status of 600 threw a
  // RangeError there, outside any promise, and ended the process (vitest reports it as an unhandled error).
  const malformed: Array<[string, string, RegExp]> = [
    ["status 600", "HTTP/1.1 600 Weird\r\ncontent-length: 2\r\n\r\nhi", /status 600/],
    ["status 999", "HTTP/1.1 999 X\r\n\r\nabc", /status 999/],
    ["status 099", "HTTP/1.1 099 X\r\n\r\n", /status 99/],
    ["garbage bytes", "\u0000\u00ffgarbage\r\n\r\n", /not HTTP \(HPE_/],
    ["a four-digit status", "HTTP/1.1 1000 X\r\n\r\n", /not HTTP \(HPE_/],
    ["a bad header", "HTTP/1.1 200 OK\r\nx-a: \u007fb\r\n\r\n", /not HTTP \(HPE_/],
  ];
  for (const [name, answer, reason] of malformed) {
    it(`rejects ${name} with BadUpstreamResponse and keeps the process up`, async () => {
      const { base, server: tcp } = await rawServer(answer);
      try {
        const failure = await createAgentProxyFetch()(`${base}/`, { method: "GET" }).then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(failure).toBeInstanceOf(BadUpstreamResponse);
        expect(String((failure as Error).message)).toMatch(reason);
      } finally {
        await new Promise<void>((resolve) => tcp.close(() => resolve()));
      }
    });
  }

  it("drops a reason phrase Response refuses instead of throwing", async () => {
    const { base, server: tcp } = await rawServer("HTTP/1.1 200 \u0001bad\r\ncontent-length: 2\r\n\r\nok");
    try {
      const res = await createAgentProxyFetch()(`${base}/`, { method: "GET" });
      expect(res.status).toBe(200);
      expect(res.statusText).toBe("");
      expect(await res.text()).toBe("ok");
    } finally {
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
    }
  });
});

describe("webStreamOf", () => {
  it("passes the source's Buffers on without copying them", async () => {
    const source = new PassThrough();
    const chunk = Buffer.alloc(1000, 1);
    const reader = webStreamOf(source).getReader();
    source.end(chunk);
    const first = await reader.read();
    expect(first.value?.buffer).toBe(chunk.buffer);
    expect((await reader.read()).done).toBe(true);
  });

  it("errors, rather than ending, when the source closes before its end", async () => {
    const source = new PassThrough();
    const reader = webStreamOf(source).getReader();
    source.write(Buffer.from("partial"));
    await reader.read();
    source.destroy();
    await expect(reader.read()).rejects.toThrow("closed before its end");
  });
});
