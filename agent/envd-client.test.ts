import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { EnvdClient } from "./envd-client.js";
import { withLogContext } from "./logger.js";

/**
 * envd answers are guest-controlled (root in a guest can replace envd on its port). A stand-in envd
 * on loopback (the HTTP boundary) answers endlessly; the agent must stop at its bounds, with a clear
 * error, without buffering what the guest sends.
 */

let server: Server | undefined;
/** Bytes the stand-in sent of its endless answers, and whether the agent hung up on it. */
let sent = 0;
let hungUp = false;

afterEach(async () => {
  const s = server;
  server = undefined;
  if (s) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
});

/** Writes 1 MiB chunks until the client goes away (at most 1 GiB, so the test ends by itself). */
function endless(res: ServerResponse): void {
  const chunk = Buffer.alloc(1024 * 1024, 0x41);
  res.once("close", () => {
    hungUp = true;
  });
  const pump = () => {
    while (sent < 1024 ** 3 && !res.destroyed) {
      sent += chunk.length;
      if (!res.write(chunk)) {
        res.once("drain", pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

/** Starts the stand-in envd and returns an EnvdClient pointed at it. */
async function standInEnvd(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<EnvdClient> {
  sent = 0;
  hungUp = false;
  const s = createServer(handler);
  server = s;
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", () => resolve()));
  return new EnvdClient("127.0.0.1", "token", (s.address() as AddressInfo).port);
}

const rssLimit = 64 * 1024 * 1024;

describe("EnvdClient against an endless guest", () => {
  it("fails a /files read whose error body never ends, with envd's status, reading only its start", async () => {
    const client = await standInEnvd((_req, res) => {
      res.writeHead(500, { "content-type": "text/plain" });
      endless(res);
    });
    const rss = process.memoryUsage().rss;
    await expect(client.readFile("/x", "user")).rejects.toThrow(/envd \/files answered 500/);
    await expect.poll(() => hungUp, { timeout: 10_000 }).toBe(true);
    expect(sent).toBeLessThan(rssLimit);
    expect(process.memoryUsage().rss - rss).toBeLessThan(rssLimit);
  });

  it("answers /health from its status without reading an endless body", async () => {
    const client = await standInEnvd((_req, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      endless(res);
    });
    expect(await client.healthy(AbortSignal.timeout(10_000))).toBe(true);
    await expect.poll(() => hungUp, { timeout: 10_000 }).toBe(true);
    expect(sent).toBeLessThan(rssLimit);
  });

  it("refuses a Connect answer larger than ENVD_READ_MAX_BYTES before buffering it", async () => {
    const { filesystem } = await standInEnvd((_req, res) => {
      // A unary answer declaring 1 GiB, then streaming it.
      res.writeHead(200, { "content-type": "application/proto", "content-length": String(1024 ** 3) });
      endless(res);
    });
    const rss = process.memoryUsage().rss;
    const failure = await filesystem.listDir({ path: "/", depth: 1 }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(ConnectError);
    expect((failure as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((failure as ConnectError).message).toMatch(/larger than configured readMaxBytes|exceeds/i);
    await expect.poll(() => hungUp, { timeout: 10_000 }).toBe(true);
    expect(sent).toBeLessThan(rssLimit);
    expect(process.memoryUsage().rss - rss).toBeLessThan(rssLimit);
  });

  it("refuses a streamed Connect message that declares more than ENVD_READ_MAX_BYTES", async () => {
    const { process: processClient } = await standInEnvd((_req, res) => {
      res.writeHead(200, { "content-type": "application/connect+proto" });
      // One envelope: flags 0, then a length of 1 GiB; its bytes follow endlessly.
      const header = Buffer.alloc(5);
      header.writeUInt32BE(1024 ** 3, 1);
      res.write(header);
      endless(res);
    });
    const rss = process.memoryUsage().rss;
    const events = processClient.start({ process: { cmd: "/bin/true", args: [], envs: {} } });
    const failure = await (async () => {
      for await (const _ of events) {
        // nothing arrives before the failure
      }
    })().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(ConnectError);
    expect((failure as ConnectError).code).toBe(Code.ResourceExhausted);
    await expect.poll(() => hungUp, { timeout: 10_000 }).toBe(true);
    expect(sent).toBeLessThan(rssLimit);
    expect(process.memoryUsage().rss - rss).toBeLessThan(rssLimit);
  });
});

describe("EnvdClient passes the edge's request id on", () => {
  it("sends x-request-id on /files and Connect calls made while serving a request, and none outside", async () => {
    const seen: Array<string | undefined> = [];
    const client = await standInEnvd((req, res) => {
      seen.push(req.headers["x-request-id"] as string | undefined);
      res.writeHead(404, { "content-type": "application/json" });
      res.end("{}");
    });
    await withLogContext({ requestId: "req_0123456789" }, async () => {
      await client.readFile("/tmp/x", "user").catch(() => {});
      await client.process.list({}).catch(() => {});
    });
    await client.readFile("/tmp/x", "user").catch(() => {});
    expect(seen).toEqual(["req_0123456789", "req_0123456789", undefined]);
  });
});
