import type http from "node:http";
import type http2 from "node:http2";
import net from "node:net";
import type tls from "node:tls";

/**
 * One port serving HTTP/1.1 and HTTP/2, for the agent and envd.
 *
 * Plain TCP: a connection whose first bytes are the HTTP/2 connection preface (h2c with prior
 * knowledge, what Connect and gRPC clients send) goes to the HTTP/2 server, any other to the HTTP/1.1
 * server. The preface may arrive in any number of TCP segments, so bytes are gathered until they
 * either stop matching it (HTTP/1.1) or complete it (HTTP/2). With TLS, ALPN chooses instead.
 */

/** The HTTP/2 connection preface (RFC 9113 §3.4). */
export const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export interface DualListenerOptions {
  /**
   * Time a new connection has to show which protocol it speaks (a TLS handshake: to finish). A client
   * that sends nothing is closed like one that never finishes its head; after the choice the HTTP/1.1
   * server's own headersTimeout and requestTimeout apply.
   */
  firstBytesTimeoutMs: number;
  /** Open connections served at once; beyond it new ones are closed as they arrive. */
  maxConnections: number;
  /**
   * Closes an HTTP/2 connection that has carried no stream for this long, as keepAliveTimeout does
   * for HTTP/1.1; a connection with an open stream (an exec or a watch that is quiet) stays. Unset: never.
   */
  h2IdleTimeoutMs?: number;
}

/** A certificate and its key (PEM), for createDualTlsListener. */
export interface TlsIdentity {
  cert: Buffer | string;
  key: Buffer | string;
}

/** One listening socket that hands each connection to an HTTP/1.1 or an HTTP/2 server. */
export interface DualListener {
  /** Not yet listening: call `server.listen(…)`. */
  server: net.Server;
  /**
   * Destroys every open connection. `server.close()` alone waits for them, and upgraded tunnels and
   * HTTP/2 sessions are no longer the HTTP servers' to close.
   */
  destroyConnections(): void;
}

/**
 * Serves `h1` and `h2` on one plain TCP listener, told apart by the HTTP/2 preface. `h2` may be a
 * function, called when the first HTTP/2 connection arrives (envd loads node:http2 only then, to save
 * an idle guest its memory). Neither server listens itself; they are handed sockets from here.
 */
export function createDualListener(
  h1: http.Server,
  h2: http2.Http2Server | (() => Promise<http2.Http2Server>),
  options: DualListenerOptions,
): DualListener {
  const handOff = handOffTo(h1, h2, options);
  const server = net.createServer((socket) => {
    handOff.accept(socket);
    sniff(socket, options.firstBytesTimeoutMs, (isH2, head) => {
      if (isH2) {
        // The HTTP/2 session first reads what is buffered on the socket, then its native handle.
        socket.unshift(head);
        handOff.toHttp2(socket);
      } else {
        handToHttp1(h1, socket, head);
      }
    });
  });
  server.maxConnections = options.maxConnections;
  return { server, destroyConnections: handOff.destroyConnections };
}

/**
 * The same over TLS, with ALPN choosing h2 or http/1.1 (no ALPN: HTTP/1.1). `firstBytesTimeoutMs`
 * bounds the handshake. node:tls is loaded here, so a process that never serves TLS (envd) never loads it.
 */
export async function createDualTlsListener(
  h1: http.Server,
  h2: http2.Http2Server | (() => Promise<http2.Http2Server>),
  options: DualListenerOptions & { tls: TlsIdentity },
): Promise<DualListener> {
  const { createServer } = await import("node:tls");
  const handOff = handOffTo(h1, h2, options);
  const server = createServer(
    {
      cert: options.tls.cert,
      key: options.tls.key,
      ALPNProtocols: ["h2", "http/1.1"],
      handshakeTimeout: options.firstBytesTimeoutMs,
    },
    (socket: tls.TLSSocket) => {
      handOff.accept(socket);
      if (socket.alpnProtocol === "h2") handOff.toHttp2(socket);
      else h1.emit("connection", socket);
    },
  );
  server.maxConnections = options.maxConnections;
  return { server, destroyConnections: handOff.destroyConnections };
}

/** What both listeners do with a connection before and after choosing its server. */
function handOffTo(
  h1: http.Server,
  h2: http2.Http2Server | (() => Promise<http2.Http2Server>),
  options: DualListenerOptions,
) {
  // Node starts tracking an HTTP server's connections (what enforces its headersTimeout and
  // requestTimeout, and what closeAllConnections closes) when the server emits "listening". h1 never
  // listens itself, so without this its timeouts would never apply.
  h1.emit("listening");
  const http2Server = lazyHttp2(h2, options.h2IdleTimeoutMs);
  const sockets = new Set<net.Socket>();
  return {
    accept(socket: net.Socket): void {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
      socket.on("error", () => socket.destroy());
      // http.Server disables Nagle's algorithm on sockets it accepts itself; these come from here, so
      // do it here. Without it a stream's small frames (a unary Connect answer's headers, then its
      // body) wait ~40 ms for the client's delayed ACK.
      socket.setNoDelay(true);
    },
    toHttp2(socket: net.Socket): void {
      http2Server().then(
        (server) => {
          if (!socket.destroyed) server.emit("connection", socket);
        },
        () => socket.destroy(),
      );
    },
    destroyConnections(): void {
      for (const socket of sockets) socket.destroy();
    },
  };
}

/**
 * Reads a connection's first bytes until they decide its protocol: HTTP/2 once the whole preface has
 * arrived, HTTP/1.1 as soon as a byte differs from it (an HTTP/1.1 request line cannot start with the
 * preface: "PRI" is no method a server here answers). Then the socket is paused and `decided` gets
 * every byte read so far. A connection that stays silent, or stops partway through the preface, is
 * closed after `timeoutMs`.
 */
function sniff(socket: net.Socket, timeoutMs: number, decided: (isH2: boolean, head: Buffer) => void): void {
  const silent = () => socket.destroy();
  socket.setTimeout(timeoutMs, silent);
  let head: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
    const n = Math.min(head.length, H2_PREFACE.length);
    const matches = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    if (matches && head.length < H2_PREFACE.length) return; // still a prefix of the preface: wait for more
    socket.setTimeout(0);
    socket.off("timeout", silent);
    socket.off("data", onData);
    socket.pause();
    decided(matches, head);
  };
  socket.on("data", onData);
}

/** The HTTP/2 server, asked for once; idle sessions are closed when `idleMs` is set. */
function lazyHttp2(
  h2: http2.Http2Server | (() => Promise<http2.Http2Server>),
  idleMs: number | undefined,
): () => Promise<http2.Http2Server> {
  let server: Promise<http2.Http2Server> | undefined;
  return () => {
    server ??= (typeof h2 === "function" ? h2() : Promise.resolve(h2)).then((s) => {
      if (idleMs !== undefined) s.on("session", (session) => closeWhenIdle(session, idleMs));
      return s;
    });
    return server;
  };
}

/** Closes an HTTP/2 session once it has had no open stream for `idleMs`. */
function closeWhenIdle(session: http2.ServerHttp2Session, idleMs: number): void {
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => session.close(), idleMs);
    timer.unref();
  };
  session.on("stream", (stream) => {
    open += 1;
    clearTimeout(timer);
    stream.once("close", () => {
      open -= 1;
      if (open === 0) arm();
    });
  });
  session.once("close", () => clearTimeout(timer));
  arm();
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
