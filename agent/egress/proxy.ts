import { connect, createServer, type Server, type Socket } from "node:net";
import { type EgressVerdict, judgeEgress } from "../../lib/egress-policy.js";
import type { Logger } from "../logger.js";
import type { ConnectionLog, NameSource } from "./connection-log.js";
import type { ResolvedNames } from "./resolved-names.js";
import { type FirstBytes, parseFirstBytes } from "./sni.js";
import { type ByteRelay, detach, type RelayedConnection, stopReading } from "./splice-relay.js";
import { type EgressLookup, platformBlock } from "./targets.js";

/**
 * The transparent egress proxy for a policy sandbox's ports 80 and 443. The slot's firewall DNATs
 * those connections to the agent's listeners keeping the destination address, and a marked "AnyIP"
 * route makes every address local, so the accepted socket's localAddress is the destination the guest
 * asked for and its remoteAddress the slot (→ the sandbox). The proxy reads the first bytes (bounded),
 * takes the TLS SNI or the HTTP Host as the name, applies the platform's block on the address, judges
 * the rest against the sandbox's policy, and then either connects from the host to the original
 * destination and relays both ways (replaying what it read, counting bytes), or closes (HTTP gets a
 * 403 naming the rule). It never terminates TLS.
 */

/** At the client's FIN an incomplete head is all there is: a name if one was read, else none. */
function parseFirstBytesFinal(bytes: Buffer): FirstBytes {
  const first = parseFirstBytes(bytes);
  return first.kind === "incomplete" ? { kind: "other" } : first;
}

export type ListenerKind = "http" | "tls";

export interface Destination {
  address: string;
  port: number;
}

export interface EgressProxyOptions {
  targets: Pick<EgressLookup, "bySlotIp">;
  log: Pick<ConnectionLog, "append" | "complete">;
  logger: Logger;
  httpPort: number;
  tlsPort: number;
  /** Default 0.0.0.0 (AnyIP delivers connections for any address to it). */
  host?: string;
  /** The destination the guest asked for; default: the socket's local address, port 80 or 443 by listener. */
  originalDestination?: (socket: Socket, kind: ListenerKind) => Destination;
  /** Opens the upstream connection; default `net.connect` from the host. */
  dial?: (destination: Destination) => Socket;
  /** The host's own addresses, blocked like the private ranges. */
  localAddresses?: () => ReadonlySet<string>;
  /** Bounds on reading the first bytes (defaults 16 KiB, 5 s). */
  peekMaxBytes?: number;
  peekTimeoutMs?: number;
  /** How long the upstream may take to accept (default 10 s). */
  connectTimeoutMs?: number;
  /**
   * Runs on each listener once it listens, before the proxy counts as started: the agent makes them
   * IP_TRANSPARENT here (agent/network/transparent.ts), without which AnyIP never answers a SYN.
   */
  prepareListener?: (server: Server) => Promise<void>;
  /** Names the resolver answered addresses for: the name of a connection that carries none. */
  resolvedNames?: Pick<ResolvedNames, "nameOf">;
  /** Open proxied connections of one sandbox at once; more are closed as they arrive (default 1024). */
  maxConnectionsPerSandbox?: number;
  /**
   * Moves an allowed connection's bytes in the kernel (splice-relay.ts); without one, or when it does
   * not take a connection, the proxy relays in Node.
   */
  relay?: ByteRelay;
}

const defaultOriginalDestination = (socket: Socket, kind: ListenerKind): Destination => ({
  address: (socket.localAddress ?? "").replace(/^::ffff:/, ""),
  port: kind === "http" ? 80 : 443,
});

export class EgressProxy {
  readonly #o: EgressProxyOptions;
  readonly #servers: Server[] = [];
  readonly #sockets = new Set<Socket>();
  readonly #relayed = new Set<RelayedConnection>();
  readonly #ports: Record<ListenerKind, number>;
  readonly #open = new Map<string, number>();

  constructor(options: EgressProxyOptions) {
    this.#o = options;
    this.#ports = { http: options.httpPort, tls: options.tlsPort };
  }

  /** Binds both listeners; a port in use fails with a message naming its variable. */
  async start(): Promise<void> {
    const host = this.#o.host ?? "0.0.0.0";
    try {
      for (const kind of ["http", "tls"] as const) {
        // Half-open allowed: a client's FIN is passed on, and the answer still flows back.
        const server = createServer({ allowHalfOpen: true }, (socket) => this.#accept(socket, kind));
        await new Promise<void>((resolve, reject) => {
          server.once("error", (err: NodeJS.ErrnoException) => {
            const variable = kind === "http" ? "AGENT_EGRESS_HTTP_PORT" : "AGENT_EGRESS_TLS_PORT";
            reject(
              new Error(
                err.code === "EADDRINUSE"
                  ? `the egress proxy cannot listen on ${host}:${this.#ports[kind]}: the port is in use (set ${variable} to a free port)`
                  : `the egress proxy cannot listen on ${host}:${this.#ports[kind]}: ${err.message}`,
                { cause: err },
              ),
            );
          });
          server.listen(this.#ports[kind], host, () => resolve());
        });
        server.on("error", (err) => this.#o.logger.warn("egress proxy listener error", { err }));
        this.#servers.push(server);
        await this.#o.prepareListener?.(server);
        const address = server.address();
        if (typeof address === "object" && address) this.#ports[kind] = address.port;
      }
    } catch (err) {
      await this.close();
      throw err;
    }
    this.#o.logger.info("egress proxy listening", { host, httpPort: this.#ports.http, tlsPort: this.#ports.tls });
  }

  /** The bound ports (useful with port 0 in tests). */
  get ports(): Readonly<Record<ListenerKind, number>> {
    return this.#ports;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    for (const r of this.#relayed) r.cut();
    await Promise.all(this.#servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }

  #track(socket: Socket): void {
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
  }

  #accept(client: Socket, kind: ListenerKind): void {
    client.on("error", () => {});
    const owner = this.#o.targets.bySlotIp(client.remoteAddress ?? "");
    // Not a sandbox's slot: nothing to proxy for it.
    if (!owner) {
      client.destroy();
      return;
    }
    // A guest opening connections without end must not take every descriptor of the agent.
    const open = this.#open.get(owner.sandboxId) ?? 0;
    if (open >= (this.#o.maxConnectionsPerSandbox ?? 1024)) {
      client.destroy();
      return;
    }
    this.#open.set(owner.sandboxId, open + 1);
    // Counted until the connection ends: the client socket's close, or the relay's end when it holds it.
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const left = (this.#open.get(owner.sandboxId) ?? 1) - 1;
      if (left <= 0) this.#open.delete(owner.sandboxId);
      else this.#open.set(owner.sandboxId, left);
    };
    const handedOver = { value: false };
    client.once("close", () => {
      if (!handedOver.value) release();
    });
    this.#track(client);
    const destination = (this.#o.originalDestination ?? defaultOriginalDestination)(client, kind);
    const source = client.remoteAddress ?? "";
    void this.#peek(client).then(async ({ bytes, first, ended }) => {
      // Looked up again: the policy may have changed (or the sandbox gone) while the first bytes came.
      const target = this.#o.targets.bySlotIp(source);
      if (client.destroyed || target?.sandboxId !== owner.sandboxId) {
        client.destroy();
        return;
      }
      // The name the connection carries; else the one the sandbox's resolver answered this address for.
      const carried = first.kind === "tls" || first.kind === "http" ? first.name : undefined;
      const resolved =
        carried === undefined ? this.#o.resolvedNames?.nameOf(target.sandboxId, destination.address) : undefined;
      const name = carried ?? resolved;
      const nameSource: NameSource | undefined =
        carried !== undefined ? (first.kind === "tls" ? "sni" : "host") : resolved !== undefined ? "dns" : undefined;
      const blocked = platformBlock(destination.address, this.#o.localAddresses?.() ?? new Set());
      const verdict: EgressVerdict =
        blocked !== undefined
          ? { allowed: false, rule: blocked, list: "platform" }
          : judgeEgress(target.policy, target.internetAccess, { address: destination.address, name });
      const decision = {
        protocol: "tcp" as const,
        address: destination.address,
        port: destination.port,
        ...(name !== undefined ? { name, nameSource } : {}),
        verdict: verdict.allowed ? ("allowed" as const) : ("denied" as const),
        rule: verdict.rule,
        list: verdict.list,
      };
      if (!verdict.allowed) {
        await this.#o.log
          .append(target.sandboxId, { ...decision, bytesOut: 0, bytesIn: 0, endedAt: Date.now() })
          .catch((err: unknown) => this.#o.logger.warn("could not log a connection", { err }));
        this.#deny(client, first, verdict, name ?? destination.address);
        return;
      }
      // The upstream dial goes first; the log's entry is made meanwhile (it is not on the set-up path).
      const logged = this.#o.log.append(target.sandboxId, decision).catch((err: unknown) => {
        this.#o.logger.warn("could not log a connection", { err });
        return undefined;
      });
      this.#connect(
        client,
        destination,
        { head: bytes, ended, http: first.kind === "http" },
        {
          handedOver: () => {
            handedOver.value = true;
          },
          done: (bytesOut, bytesIn) => {
            release();
            void logged.then((entry) =>
              entry
                ? this.#o.log
                    .complete(target.sandboxId, entry.seq, { bytesOut, bytesIn })
                    .catch((err: unknown) =>
                      this.#o.logger.warn("could not complete a connection's log entry", { err }),
                    )
                : undefined,
            );
          },
        },
      );
    });
  }

  /** Reads until the first bytes say what they are, `peekMaxBytes` are in, the peer stops sending, or time runs out. */
  #peek(client: Socket): Promise<{ bytes: Buffer; first: FirstBytes; ended: boolean }> {
    const maxBytes = this.#o.peekMaxBytes ?? 16_384;
    return new Promise((resolve) => {
      let bytes = Buffer.alloc(0);
      let settled = false;
      let ended = false;
      const finish = (first: FirstBytes) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        client.off("data", onData);
        client.off("end", onEnd);
        client.pause();
        // Nothing more is read until the connection's bytes are relayed (in Node or handed over).
        stopReading(client);
        resolve({ bytes, first, ended });
      };
      const onData = (chunk: Buffer) => {
        bytes = Buffer.concat([bytes, chunk]);
        const first = parseFirstBytes(bytes);
        if (first.kind !== "incomplete") finish(first);
        else if (bytes.length >= maxBytes) finish({ kind: "other" });
      };
      const onEnd = () => {
        ended = true;
        finish(bytes.length > 0 ? parseFirstBytesFinal(bytes) : { kind: "other" });
      };
      const timer = setTimeout(() => finish({ kind: "other" }), this.#o.peekTimeoutMs ?? 5000);
      client.on("data", onData);
      client.on("end", onEnd);
      client.once("close", () => finish({ kind: "other" }));
    });
  }

  #deny(client: Socket, first: FirstBytes, verdict: EgressVerdict, what: string): void {
    if (first.kind !== "http") {
      client.destroy();
      return;
    }
    const body = `wrenn: egress to ${what} is denied by the sandbox's network policy (${verdict.list} rule ${verdict.rule})\n`;
    client.end(
      `HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
    // A client that never reads must not hold the socket.
    setTimeout(() => client.destroy(), 5000).unref();
  }

  /**
   * Dials upstream for an allowed connection and relays it. With the kernel relay the pair is handed
   * over while the connect is still under way, with the head: the relay sends it the moment the
   * upstream accepts, and the agent's own wake-up for the connect is off the set-up path (it only
   * closes its copies then). The agent keeps both sockets until it sees the connect, so a connect that
   * fails is still answered here (HTTP 502). Without the relay, or when it does not take the pair, the
   * head goes out at the connect and the pair is handed over then, or relayed in Node.
   */
  #connect(
    client: Socket,
    destination: Destination,
    { head, ended, http }: { head: Buffer; ended: boolean; http: boolean },
    on: { handedOver: () => void; done: (bytesOut: number, bytesIn: number) => void },
  ): void {
    const dial = this.#o.dial ?? ((d: Destination) => connect({ host: d.address, port: d.port, allowHalfOpen: true }));
    const upstream = dial(destination);
    this.#track(upstream);
    // Errors are handled by what listens below; one after those are gone must not throw.
    upstream.on("error", () => {});
    let connected = false;
    let finished = false;
    const finish = (bytesOut: number, bytesIn: number) => {
      if (finished) return;
      finished = true;
      on.done(bytesOut, bytesIn);
    };
    /** The early hand-over: none, waiting for the relay's answer, or taken. */
    let early: "none" | "pending" | "taken" = "none";
    let relayed: RelayedConnection | undefined;
    const connectTimer = setTimeout(
      () => upstream.destroy(new Error("connect timed out")),
      this.#o.connectTimeoutMs ?? 10_000,
    );
    const onError = () => {
      clearTimeout(connectTimer);
      if (connected) return;
      client.off("close", onClientGone);
      // The relay lets its copies go quietly; the client is answered from here.
      relayed?.cut();
      // An HTTP client whose destination never answered gets a 502 rather than a bare reset.
      if (http && !client.destroyed) {
        const body = "wrenn: the destination did not accept the connection\n";
        client.resume();
        client.end(
          `HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
        );
        setTimeout(() => client.destroy(), 5000).unref();
      } else {
        client.destroy();
      }
      finish(0, 0);
    };
    upstream.once("error", onError);
    // The guest gave up while the upstream was being dialled.
    const onClientGone = () => {
      clearTimeout(connectTimer);
      upstream.off("error", onError);
      relayed?.cut();
      upstream.destroy();
      finish(0, 0);
    };
    client.once("close", onClientGone);
    /** The agent's copies go once the relay holds the pair and the upstream has connected. */
    const letGo = () => {
      on.handedOver();
      client.destroy();
      upstream.destroy();
    };
    /** The path without an early hand-over: the head now, then the relay (or Node). */
    const relayConnected = () => {
      upstream.setNoDelay(true);
      client.setNoDelay(true);
      // The head goes out now, not after the hand-over: the server starts on it meanwhile (the
      // hand-over waits until the kernel has it all, so nothing the relay sends can overtake it).
      const headOut = head.length > 0 && this.#o.relay !== undefined;
      const handOver = () =>
        void this.#handOver(
          client,
          upstream,
          { ended, sent: headOut ? head.length : 0 },
          {
            handedOver: on.handedOver,
            done: finish,
          },
        ).then((taken) => {
          if (!taken)
            this.#pipe(
              client,
              upstream,
              { head: headOut ? Buffer.alloc(0) : head, ended, sent: headOut ? head.length : 0 },
              finish,
            );
        });
      if (headOut) upstream.write(head, handOver);
      else handOver();
    };
    upstream.once("connect", () => {
      connected = true;
      clearTimeout(connectTimer);
      upstream.off("error", onError);
      client.off("close", onClientGone);
      // Paused here, before Node's first read of it: nothing of upstream's is read by Node.
      upstream.pause();
      if (early === "taken") letGo();
      else if (early === "none") relayConnected();
      // "pending": decided when the relay answers.
    });
    const relay = this.#o.relay;
    if (!relay) return;
    // Node must never read the upstream the relay is about to hold.
    upstream.pause();
    early = "pending";
    // After Node's own connect call (queued by dial on the same tick queue), so the socket exists.
    process.nextTick(() => {
      const fromClient = client.destroyed ? Buffer.alloc(0) : detach(client);
      void relay
        .take(client, upstream, {
          toUpstream: fromClient.length > 0 ? Buffer.concat([head, fromClient]) : head,
          toClient: Buffer.alloc(0),
          clientEnded: ended,
          upstreamEnded: false,
          connecting: true,
        })
        .then((connection) => {
          if (!connection) {
            if (fromClient.length > 0) client.unshift(fromClient);
            early = "none";
            if (connected) relayConnected();
            return;
          }
          early = "taken";
          relayed = connection;
          this.#relayed.add(connection);
          void connection.done.then(({ bytesOut, bytesIn, refused }) => {
            this.#relayed.delete(connection);
            // A refused connect is answered by onError (the agent saw it too).
            if (!refused) finish(bytesOut, bytesIn);
          });
          if (finished) connection.cut();
          else if (connected) letGo();
        });
    });
  }

  /** Gives a connected pair to the kernel relay; false when there is none or it did not take it. */
  async #handOver(
    client: Socket,
    upstream: Socket,
    { ended, sent }: { ended: boolean; sent: number },
    on: { handedOver: () => void; done: (bytesOut: number, bytesIn: number) => void },
  ): Promise<boolean> {
    const relay = this.#o.relay;
    if (!relay || client.destroyed || upstream.destroyed) return false;
    const fromClient = detach(client);
    const fromUpstream = detach(upstream);
    const connection = await relay.take(client, upstream, {
      toUpstream: fromClient,
      toClient: fromUpstream,
      clientEnded: ended || client.readableEnded,
      upstreamEnded: upstream.readableEnded,
    });
    if (!connection) {
      // Still ours: what detach took goes first, as it would have.
      if (fromClient.length > 0) client.unshift(fromClient);
      if (fromUpstream.length > 0) upstream.unshift(fromUpstream);
      return false;
    }
    // The relay has its own descriptors: the agent's copies are closed (no FIN: the sockets live on there).
    on.handedOver();
    this.#relayed.add(connection);
    client.destroy();
    upstream.destroy();
    void connection.done.then(({ bytesOut, bytesIn }) => {
      this.#relayed.delete(connection);
      on.done(sent + bytesOut, bytesIn);
    });
    return true;
  }

  /** The Node relay: a stream pipe each way, counting bytes. */
  #pipe(
    client: Socket,
    upstream: Socket,
    { head, ended, sent }: { head: Buffer; ended: boolean; sent: number },
    done: (bytesOut: number, bytesIn: number) => void,
  ): void {
    let bytesOut = sent + head.length;
    let bytesIn = 0;
    let closed = 0;
    const onClose = () => {
      closed++;
      if (closed === 2) done(bytesOut, bytesIn);
    };
    if (client.destroyed || upstream.destroyed) {
      client.destroy();
      upstream.destroy();
      done(0, 0);
      return;
    }
    client.once("close", onClose);
    upstream.once("close", onClose);
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
    // One side gone entirely: the other gets what is buffered and a FIN, and is cut if it lingers.
    const wind = (other: Socket) => () => {
      if (other.destroyed) return;
      other.end();
      setTimeout(() => other.destroy(), 5000).unref();
    };
    client.once("close", wind(upstream));
    upstream.once("close", wind(client));
    if (head.length > 0) upstream.write(head);
    // The client already sent its FIN while we read its first bytes: pass it on.
    if (ended) upstream.end();
    client.on("data", (chunk: Buffer) => {
      bytesOut += chunk.length;
    });
    upstream.on("data", (chunk: Buffer) => {
      bytesIn += chunk.length;
    });
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
    upstream.resume();
  }
}
