import { connect, type Socket } from "node:net";
import { type WebSocket, WebSocketServer } from "ws";

/**
 * A WebSocket→TCP proxy for the Neon serverless driver in tests, in the URL shape of Neon's own
 * wsproxy (`ws://host:port/v2?address=<db host>:<db port>`), so the driver reaches a plain
 * PostgreSQL server as it would reach Neon. Only allow-listed addresses are dialled. After a
 * PostgreSQL Terminate message the TCP side is closed, so `pool.end()` returns even when the server
 * does not hang up by itself.
 */
export interface WsProxy {
  /** What to put in `WRENN_NEON_WSPROXY`, e.g. `127.0.0.1:40111/v2`. */
  address: string;
  port: number;
  /** Connections opened so far (for tests that check pools are closed). */
  opened(): number;
  /** Connections open now. */
  open(): number;
  close(): Promise<void>;
}

/** The Terminate message of the PostgreSQL protocol: 'X' and a length of 4. */
const terminate = Buffer.from([0x58, 0x00, 0x00, 0x00, 0x04]);

/** Starts the proxy on a random loopback port, allowing only `allow` (`host:port` strings). */
export async function startWsProxy(allow: readonly string[]): Promise<WsProxy> {
  const allowed = new Set(allow);
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/v2" });
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  const sockets = new Set<Socket>();
  let opened = 0;
  server.on("connection", (ws: WebSocket, req) => {
    const target = new URL(req.url ?? "/", "http://proxy").searchParams.get("address") ?? "";
    if (!allowed.has(target)) {
      ws.close(1008, "address not allowed");
      return;
    }
    const colon = target.lastIndexOf(":");
    const tcp = connect({ host: target.slice(0, colon), port: Number(target.slice(colon + 1)) });
    opened++;
    sockets.add(tcp);
    tcp.on("data", (chunk) => {
      if (ws.readyState === ws.OPEN) ws.send(chunk);
    });
    tcp.on("close", () => {
      sockets.delete(tcp);
      ws.close();
    });
    tcp.on("error", () => ws.terminate());
    ws.on("message", (data: Buffer | ArrayBuffer | Buffer[]) => {
      const chunk = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      tcp.write(chunk);
      if (chunk.length >= terminate.length && chunk.subarray(-terminate.length).equals(terminate)) tcp.end();
    });
    ws.on("close", () => tcp.end());
    ws.on("error", () => tcp.destroy());
  });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  return {
    address: `127.0.0.1:${port}/v2`,
    port,
    opened: () => opened,
    open: () => sockets.size,
    close: async () => {
      for (const ws of server.clients) ws.terminate();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
