import type http from "node:http";
import type http2 from "node:http2";
import net from "node:net";

/** The HTTP/2 connection preface; a client speaking h2c without upgrade starts with it. */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** One TCP listener that hands each connection to an HTTP/1.1 or an h2c server. */
export interface DualProtocolListener {
  server: net.Server;
  /** Destroys every open connection (for shutdown; `server.close()` alone waits for them). */
  destroyConnections(): void;
}

/**
 * Serves HTTP/1.1 and h2c on one port, told apart by the HTTP/2 preface in a connection's first
 * bytes. Those bytes have already been read when the choice is made, so they are put back for the
 * chosen server. The h2c server is asked for when the first h2c connection arrives.
 */
export function createDualProtocolListener(
  h1: http.Server,
  h2: () => Promise<http2.Http2Server>,
  limits: { firstBytesTimeoutMs: number; maxConnections: number } = {
    firstBytesTimeoutMs: 30_000,
    maxConnections: 1024,
  },
): DualProtocolListener {
  // Node starts tracking an HTTP server's connections (what enforces its headersTimeout and
  // requestTimeout) when the server emits "listening". h1 never listens itself, it is handed sockets
  // from here, so without this its timeouts were never applied.
  h1.emit("listening");
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    // http.Server would disable Nagle on sockets it accepts itself; these come from here, so do it
    // here. Without it a stream's small frames wait ~40 ms for delayed ACKs.
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    // A connection that never says which protocol it speaks is closed like one that never finishes its head.
    const silent = () => socket.destroy();
    socket.setTimeout(limits.firstBytesTimeoutMs, silent);
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const n = Math.min(buffered.length, H2_PREFACE.length);
      const isH2 = buffered.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (isH2 && buffered.length < H2_PREFACE.length) return; // need more bytes to decide
      socket.setTimeout(0);
      socket.off("timeout", silent);
      socket.off("data", onData);
      socket.pause();
      if (isH2) {
        // The HTTP/2 session takes the buffered bytes and then reads the socket's handle itself.
        socket.unshift(buffered);
        h2().then(
          (server) => {
            if (!socket.destroyed) server.emit("connection", socket);
          },
          () => socket.destroy(),
        );
        return;
      }
      handToHttp1(h1, socket, buffered);
    };
    socket.on("data", onData);
  });
  // Beyond this many open connections, new ones are closed as they arrive.
  server.maxConnections = limits.maxConnections;
  return {
    server,
    destroyConnections() {
      for (const s of sockets) s.destroy();
    },
  };
}

/**
 * Gives a socket whose first bytes were already read to the HTTP/1.1 server without breaking its
 * request-body backpressure.
 *
 * http.Server reads the socket's handle directly and pauses it through the socket's 'pause' and
 * 'resume' events when a request's buffer is full. `resume()` emits 'resume' on the next tick. Had
 * the read bytes been put back before that tick, they could reach the parser first (through the
 * stream's own 'readable' tick), the server could pause the socket, and the late 'resume' would then
 * restart reading on a socket it believes paused: no further pause takes effect, and an upload
 * whose writer is slower than the network piles up in memory (hundreds of MiB for one large
 * upload). So the socket is resumed first and the bytes are put back in a later tick, after the
 * 'resume' has been handled and before any new I/O is read.
 */
function handToHttp1(h1: http.Server, socket: net.Socket, head: Buffer): void {
  h1.emit("connection", socket);
  socket.resume();
  process.nextTick(() => {
    if (!socket.destroyed) socket.unshift(head);
  });
}
