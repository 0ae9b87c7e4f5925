import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** One request a receiver got. */
export interface ReceivedHook {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** performance.now() when the body had arrived. */
  at: number;
  /** The status the receiver answered. */
  status: number;
}

/** A webhook receiver on loopback (tests only talk to loopback). */
export interface WebhookReceiver {
  url: string;
  received: ReceivedHook[];
  /** Decides the status per request (default 200). */
  respond: (hook: Omit<ReceivedHook, "status">) => number;
  /** Resolves with the first request `match` accepts (polling what arrived), or rejects after `timeoutMs`. */
  waitFor(match: (hook: ReceivedHook) => boolean, timeoutMs?: number): Promise<ReceivedHook>;
  close(): Promise<void>;
}

/** Starts a receiver on 127.0.0.1 with a free port. */
export async function startWebhookReceiver(): Promise<WebhookReceiver> {
  const received: ReceivedHook[] = [];
  const receiver = { received, respond: () => 200 } as unknown as WebhookReceiver;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const hook = {
        path: req.url ?? "/",
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
        at: performance.now(),
      };
      const status = receiver.respond(hook);
      received.push({ ...hook, status });
      res.writeHead(status, { "content-type": "text/plain" }).end(status < 300 ? "ok" : "no");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  receiver.waitFor = async (match, timeoutMs = 15_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = received.find(match);
      if (hit) return hit;
      if (Date.now() > deadline) {
        throw new Error(
          `no matching webhook within ${timeoutMs} ms; got: ${received.map((r) => `${r.path} ${r.body.slice(0, 80)}`).join(" | ")}`,
        );
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  receiver.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return receiver;
}
