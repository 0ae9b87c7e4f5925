import { createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { type RelayHead, type RelayRequest, startRelay } from "./proxy-relay.js";

let server: Server | undefined;

afterEach(async () => {
  const s = server;
  server = undefined;
  if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
});

/** A raw TCP "guest" that records the request bytes and answers with `respond`. */
async function guest(respond: (socket: Socket, request: () => string) => void): Promise<{ port: number }> {
  const s = createServer((socket) => {
    let received = "";
    socket.on("data", (d) => {
      received += d.toString("latin1");
    });
    respond(socket, () => received);
  });
  server = s;
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", () => resolve()));
  const address = s.address();
  return { port: typeof address === "object" && address ? address.port : 0 };
}

interface Outcome {
  head?: RelayHead;
  body: Buffer;
  ended: boolean;
  error?: { message: string; beforeHead: boolean };
}

function run(port: number, overrides: Partial<RelayRequest> = {}, send?: Buffer[]): Promise<Outcome> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const outcome: Outcome = { body: Buffer.alloc(0), ended: false };
    const relay = startRelay(
      {
        host: "127.0.0.1",
        port,
        method: "GET",
        path: "/x?y=1",
        headers: { a: "1" },
        body: { kind: "none" },
        ...overrides,
      },
      {
        onHead: (head) => {
          outcome.head = head;
        },
        onData: (chunk) => {
          chunks.push(chunk);
          return true;
        },
        onEnd: () => {
          outcome.ended = true;
          outcome.body = Buffer.concat(chunks);
          resolve(outcome);
        },
        onError: (err, beforeHead) => {
          outcome.error = { message: err.message, beforeHead };
          outcome.body = Buffer.concat(chunks);
          resolve(outcome);
        },
      },
    );
    for (const chunk of send ?? []) relay.write(chunk);
    if (send) relay.end();
  });
}

describe("startRelay", () => {
  it("relays a Content-Length body exactly, after skipping an interim 100 Continue", async () => {
    const body = Buffer.alloc(3 * 1024 * 1024, 9);
    const { port } = await guest((socket) => {
      socket.write("HTTP/1.1 100 Continue\r\n\r\n");
      socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\nset-cookie: a\r\nset-cookie: b\r\n\r\n`);
      socket.write(body);
    });
    const out = await run(port);
    expect(out.head?.status).toBe(200);
    expect(out.head?.headers["set-cookie"]).toEqual(["a", "b"]);
    expect(out.body.equals(body)).toBe(true);
  });

  it("decodes a chunked body with extensions and trailers, split at awkward places", async () => {
    const { port } = await guest((socket) => {
      const raw =
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: t\r\n\r\n";
      let i = 0;
      const next = () => {
        if (i >= raw.length) return;
        socket.write(raw.slice(i, i + 3));
        i += 3;
        setImmediate(next);
      };
      next();
    });
    const out = await run(port);
    expect(out.body.toString()).toBe("hello world");
    expect(out.ended).toBe(true);
  });

  it("sends the request head and a chunked body as announced", async () => {
    let request: () => string = () => "";
    const { port } = await guest((socket, received) => {
      request = received;
      socket.on("data", () => {
        if (received().endsWith("0\r\n\r\n")) socket.end("HTTP/1.1 204 No Content\r\n\r\n");
      });
    });
    const out = await run(port, { method: "POST", body: { kind: "chunked" } }, [Buffer.from("abc"), Buffer.from("de")]);
    expect(out.head?.status).toBe(204);
    expect(request()).toBe(
      "POST /x?y=1 HTTP/1.1\r\nhost: 127.0.0.1:" +
        port +
        "\r\na: 1\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
  });

  it("relays a close-delimited body to its end, and reports a cut-off Content-Length body as an error", async () => {
    const closeDelimited = await guest((socket) => socket.end("HTTP/1.1 200 OK\r\n\r\nuntil close"));
    expect((await run(closeDelimited.port)).body.toString()).toBe("until close");
    await new Promise<void>((resolve) => server?.close(() => resolve()));
    const cut = await guest((socket) => socket.end("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort"));
    const out = await run(cut.port);
    expect(out.ended).toBe(false);
    expect(out.error?.beforeHead).toBe(false);
  });

  it("reports refused connections and malformed answers before the head", async () => {
    const refused = await run(1);
    expect(refused.error).toMatchObject({ beforeHead: true, message: expect.stringMatching(/ECONNREFUSED/) });
    const { port } = await guest((socket) => socket.end("SSH-2.0-nope\r\n\r\n"));
    const out = await run(port);
    expect(out.error).toMatchObject({ beforeHead: true, message: "the guest sent a malformed HTTP response" });
  });

  it("ends at the head for HEAD requests even when a Content-Length is announced", async () => {
    const { port } = await guest((socket) => socket.write("HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n"));
    const out = await run(port, { method: "HEAD" });
    expect(out.ended).toBe(true);
    expect(out.head?.headers["content-length"]).toBe("5000");
    expect(out.body.length).toBe(0);
  });
});
