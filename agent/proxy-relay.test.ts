import { randomBytes } from "node:crypto";
import { createServer as createHttpServer, type IncomingMessage } from "node:http";
import { createServer, type Server, type Socket } from "node:net";
import { PassThrough } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { GuestConnections, type GuestFailure, type GuestRequest, sendToGuest } from "./proxy-relay.js";

// Every "guest" here is a server on loopback that the test controls byte by byte.

const servers: Server[] = [];
const pools: GuestConnections[] = [];

afterEach(async () => {
  for (const pool of pools.splice(0)) pool.close();
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.close(() => resolve());
          (s as Server & { closeAllConnections?: () => void }).closeAllConnections?.();
        }),
    ),
  );
});

function portOf(s: Server): number {
  const address = s.address();
  return typeof address === "object" && address ? address.port : 0;
}

async function listen(s: Server): Promise<number> {
  servers.push(s);
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", () => resolve()));
  return portOf(s);
}

/** A raw TCP guest: each connection gets `answer` written once its request head has arrived. */
async function rawGuest(answer: (socket: Socket) => void): Promise<{ port: number; connections: () => number }> {
  let connections = 0;
  const port = await listen(
    createServer((socket) => {
      connections += 1;
      let received = "";
      let answered = false;
      socket.on("error", () => {});
      socket.on("data", (d) => {
        received += d.toString("latin1");
        if (!answered && received.includes("\r\n\r\n")) {
          answered = true;
          answer(socket);
        }
      });
    }),
  );
  return { port, connections: () => connections };
}

function pool(limits?: ConstructorParameters<typeof GuestConnections>[0]): GuestConnections {
  const p = new GuestConnections(limits);
  pools.push(p);
  return p;
}

type Outcome = { status: number; headers: IncomingMessage["headers"]; body: Buffer } | { failure: GuestFailure };

function exchange(port: number, overrides: Partial<GuestRequest> = {}, body?: Buffer[]): Promise<Outcome> {
  return new Promise((resolve) => {
    const source = body === undefined ? undefined : new PassThrough();
    sendToGuest(
      {
        agent: overrides.agent ?? pool().agentFor("sbx", "127.0.0.1"),
        host: "127.0.0.1",
        port,
        method: "GET",
        path: "/x?y=1",
        headers: { a: "1" },
        body: body === undefined ? { kind: "none" } : { kind: "chunked" },
        ...overrides,
      },
      source,
      {
        onResponse: (response) => {
          const chunks: Buffer[] = [];
          response.on("data", (c: Buffer) => chunks.push(c));
          const done = () =>
            resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) });
          response.on("end", done);
          // A body cut short: the head was relayed, the client would see a broken body.
          response.on("error", done);
        },
        onFailure: (failure) => resolve({ failure }),
      },
    );
    if (source !== undefined) {
      for (const chunk of body ?? []) source.write(chunk);
      source.end();
    }
  });
}

describe("sendToGuest: what a hostile guest can answer", () => {
  it.each([
    ["status 600", "HTTP/1.1 600 Weird\r\ncontent-length: 2\r\n\r\nhi"],
    ["status 999", "HTTP/1.1 999 X\r\n\r\n"],
    ["status 099", "HTTP/1.1 099 X\r\n\r\n"],
    ["a final 101 without an upgrade", "HTTP/1.1 101 Switching Protocols\r\n\r\n"],
  ])("%s is a SANDBOX_BAD_RESPONSE, never a relayed status", async (_name, answer) => {
    const guest = await rawGuest((socket) => socket.write(answer));
    const out = await exchange(guest.port);
    expect(out).toEqual({ failure: { code: "SANDBOX_BAD_RESPONSE", message: expect.stringMatching(/status/) } });
  });

  it.each([
    ["garbage", "SSH-2.0-OpenSSH_9.2\r\n\r\n"],
    ["status 1000", "HTTP/1.1 1000 X\r\n\r\n"],
    ["two Content-Lengths", "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello"],
    ["a control character in a header", "HTTP/1.1 200 OK\r\nx-a: a\u0001b\r\n\r\n"],
    ["a header line without a colon", "HTTP/1.1 200 OK\r\nfoo bar\r\n\r\n"],
    ["a head larger than 64 KiB", `HTTP/1.1 200 OK\r\nx-big: ${"a".repeat(70 * 1024)}\r\n\r\n`],
  ])("%s is a SANDBOX_BAD_RESPONSE", async (_name, answer) => {
    const guest = await rawGuest((socket) => socket.write(answer));
    const out = await exchange(guest.port);
    expect(out).toMatchObject({ failure: { code: "SANDBOX_BAD_RESPONSE", message: expect.stringMatching(/HPE_/) } });
  });

  it("a refused port is PORT_NOT_OPEN and a connection closed without an answer is UPSTREAM_ERROR", async () => {
    const closed = await rawGuest((socket) => socket.destroy());
    expect(await exchange(closed.port, { agent: false })).toMatchObject({ failure: { code: "UPSTREAM_ERROR" } });
    const port = closed.port;
    await new Promise<void>((resolve) => servers.pop()?.close(() => resolve()));
    expect(await exchange(port, { agent: false })).toMatchObject({ failure: { code: "PORT_NOT_OPEN" } });
  });

  it("random and mutated answers either relay a status of 200–599 or fail cleanly (2000 cases)", async () => {
    // Valid answers, cut and mutated at random places, plus plain noise: the relay's one promise is
    // that nothing outside 200–599 and nothing malformed reaches the client, and nothing throws.
    const seeds = [
      "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
      "HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
      "HTTP/1.0 302 Found\r\nlocation: /x\r\n\r\n",
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    ];
    let i = 0;
    const answers: Buffer[] = [];
    for (let n = 0; n < 2000; n++) {
      const seed = Buffer.from(seeds[n % seeds.length] ?? "");
      const kind = n % 4;
      if (kind === 0) answers.push(randomBytes(1 + (n % 200)));
      else if (kind === 1) answers.push(seed.subarray(0, n % seed.length));
      else {
        const mutated = Buffer.from(seed);
        for (let m = 0; m < 1 + (n % 4); m++) mutated[(n * 7 + m * 13) % mutated.length] = randomBytes(1)[0] ?? 0;
        answers.push(mutated);
      }
    }
    const guest = await rawGuest((socket) => {
      const answer = answers[i++ % answers.length] ?? Buffer.alloc(0);
      socket.end(answer);
    });
    const connections = pool({ maxSockets: 8 });
    const outcomes = { relayed: 0, failed: 0 };
    for (let n = 0; n < answers.length; n += 50) {
      const batch = await Promise.all(
        Array.from({ length: 50 }, () =>
          exchange(guest.port, { agent: connections.agentFor("fuzz", "127.0.0.1") }).catch((err: unknown) => {
            throw new Error(`exchange threw: ${String(err)}`);
          }),
        ),
      );
      for (const out of batch) {
        if ("failure" in out) {
          outcomes.failed += 1;
          expect(["SANDBOX_BAD_RESPONSE", "UPSTREAM_ERROR"]).toContain(out.failure.code);
        } else {
          outcomes.relayed += 1;
          expect(out.status).toBeGreaterThanOrEqual(200);
          expect(out.status).toBeLessThanOrEqual(599);
        }
      }
    }
    expect(outcomes.relayed + outcomes.failed).toBe(2000);
    expect(outcomes.failed).toBeGreaterThan(0);
  }, 60_000);
});

describe("sendToGuest: framing", () => {
  it("relays a Content-Length body exactly after an interim 100 Continue, with repeated headers", async () => {
    const body = Buffer.alloc(3 * 1024 * 1024, 9);
    const guest = await rawGuest((socket) => {
      socket.write("HTTP/1.1 100 Continue\r\n\r\n");
      socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\nset-cookie: a\r\nset-cookie: b\r\n\r\n`);
      socket.write(body);
    });
    const out = await exchange(guest.port);
    if ("failure" in out) throw new Error(out.failure.message);
    expect(out.status).toBe(200);
    expect(out.headers["set-cookie"]).toEqual(["a", "b"]);
    expect(out.body.equals(body)).toBe(true);
  });

  it("sends Host, the caller's headers and a chunked body as announced", async () => {
    let request = "";
    const port = await listen(
      createServer((socket) => {
        socket.on("data", (d) => {
          request += d.toString("latin1");
          if (request.endsWith("0\r\n\r\n")) socket.end("HTTP/1.1 204 No Content\r\n\r\n");
        });
      }),
    );
    const out = await exchange(port, { method: "POST" }, [Buffer.from("abc"), Buffer.from("de")]);
    expect(out).toMatchObject({ status: 204 });
    expect(request).toMatch(/^POST \/x\?y=1 HTTP\/1\.1\r\n/);
    expect(request).toContain(`\r\nhost: 127.0.0.1:${port}\r\n`);
    expect(request).toContain("\r\na: 1\r\n");
    expect(request.match(/host:/gi)).toHaveLength(1);
    expect(request).toMatch(/\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n$/);
  });
});

describe("GuestConnections", () => {
  it("reuses one connection for sequential requests to a guest", async () => {
    let connections = 0;
    const s = createHttpServer((_req, res) => res.end("ok"));
    s.on("connection", () => {
      connections += 1;
    });
    const port = await listen(s);
    const p = pool();
    for (let n = 0; n < 20; n++) {
      expect(await exchange(port, { agent: p.agentFor("sbx", "127.0.0.1") })).toMatchObject({ status: 200 });
    }
    expect(connections).toBe(1);
  });

  it("sends a body-less request again on a new connection when a reused one turns out closed", async () => {
    // The guest closes a kept-alive connection as the second request arrives on it: the race every
    // keep-alive client meets when a server times out an idle connection.
    let connections = 0;
    const port = await listen(
      createServer((socket) => {
        connections += 1;
        let requests = 0;
        socket.on("error", () => {});
        socket.on("data", () => {
          requests += 1;
          if (requests === 1) socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
          else socket.destroy();
        });
      }),
    );
    const p = pool();
    expect(await exchange(port, { agent: p.agentFor("sbx", "127.0.0.1") })).toMatchObject({ status: 200 });
    expect(await exchange(port, { agent: p.agentFor("sbx", "127.0.0.1") })).toMatchObject({ status: 200 });
    expect(connections).toBe(2);
  });

  it("holds at most maxSockets connections to one guest", async () => {
    let open = 0;
    let peak = 0;
    const s = createHttpServer((_req, res) => {
      setTimeout(() => res.end("ok"), 50);
    });
    s.on("connection", (socket: Socket) => {
      open += 1;
      peak = Math.max(peak, open);
      socket.on("close", () => {
        open -= 1;
      });
    });
    const port = await listen(s);
    const p = pool({ maxSockets: 3 });
    const outs = await Promise.all(
      Array.from({ length: 12 }, () => exchange(port, { agent: p.agentFor("sbx", "127.0.0.1") })),
    );
    expect(outs.every((o) => "status" in o && o.status === 200)).toBe(true);
    expect(peak).toBe(3);
  });

  it("closes idle connections after the idle timeout", async () => {
    const closed: number[] = [];
    const s = createHttpServer((_req, res) => res.end("ok"));
    s.on("connection", (socket: Socket) => socket.on("close", () => closed.push(Date.now())));
    const port = await listen(s);
    const p = pool({ idleTimeoutMs: 200 });
    const started = Date.now();
    await exchange(port, { agent: p.agentFor("sbx", "127.0.0.1") });
    await new Promise((r) => setTimeout(r, 600));
    expect(closed).toHaveLength(1);
    expect((closed[0] ?? 0) - started).toBeLessThan(600);
    expect(p.stats().get("sbx")).toEqual({ open: 0, idle: 0, tunnels: 0 });
  });

  it("drop() closes a sandbox's idle and busy connections; a new address gets a new pool", async () => {
    const closes: string[] = [];
    const s = createHttpServer((req, res) => {
      if (req.url === "/slow") return; // never answers
      res.end("ok");
    });
    s.on("connection", (socket: Socket) => socket.on("close", () => closes.push("closed")));
    const port = await listen(s);
    const p = pool();
    // One connection busy with an answer that never comes, one idle after a finished exchange.
    const slow = exchange(port, { agent: p.agentFor("sbx", "127.0.0.1"), path: "/slow" });
    await exchange(port, { agent: p.agentFor("sbx", "127.0.0.1") });
    await new Promise((r) => setTimeout(r, 100));
    expect(p.stats().get("sbx")).toEqual({ open: 1, idle: 1, tunnels: 0 });
    p.drop("sbx");
    expect(await slow).toMatchObject({ failure: { code: "UPSTREAM_ERROR" } });
    await new Promise((r) => setTimeout(r, 100));
    expect(closes).toHaveLength(2);
    expect(p.stats().has("sbx")).toBe(false);

    const first = p.agentFor("other", "127.0.0.1");
    expect(p.agentFor("other", "127.0.0.1")).toBe(first);
    expect(p.agentFor("other", "127.0.0.2")).not.toBe(first);
    p.retain(() => undefined);
    expect(p.stats().size).toBe(0);
  });
});
