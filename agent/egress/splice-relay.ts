import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import type { Socket } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { buildCProgram } from "../compile-c.js";
import type { Exec } from "../exec.js";
import type { Logger } from "../logger.js";

/**
 * The driver of relay.c: the egress proxy's bytes moved in the kernel (splice) by one long-lived child
 * of the agent, instead of a Node stream pipe per direction (CPU-bound near 190 MiB/s). The proxy
 * reads the first bytes, judges, connects upstream, stops reading both sockets and hands them over
 * with whatever it read and has not passed on; the relay takes its own copies of the descriptors
 * (pidfd_getfd from the agent's pid) and, once it says so, the agent closes its copies. When the
 * relay ends, the connections it held are cut (their descriptors die with it) and it is started again;
 * meanwhile, and whenever it cannot take a connection, the proxy relays in Node.
 */

const RELAY_SOURCE = fileURLToPath(new URL("./relay.c", import.meta.url));

/** What the agent read and has not passed on, handed over with the connection. */
export interface HandOver {
  /** Bytes read from the client for upstream (the peeked head and anything buffered after it). */
  toUpstream: Buffer;
  /** Bytes read from upstream for the client. */
  toClient: Buffer;
  /** The client's FIN was already read: passed on once toUpstream is out. */
  clientEnded: boolean;
  upstreamEnded: boolean;
  /** The upstream's connect is still under way: the relay sends toUpstream once it is done. */
  connecting?: boolean;
}

export interface RelayResult {
  /** Bytes written to upstream and to the client, handed-over bytes included. */
  bytesOut: number;
  bytesIn: number;
  /**
   * The relay ended while it held the connection, which was cut: the counts are then only the bytes
   * handed over (what it moved since is unknown).
   */
  cut: boolean;
  /** The upstream never connected (handed over while connecting): nothing was relayed. */
  refused?: boolean;
}

/** A connection the relay holds. */
export interface RelayedConnection {
  /** Settles when both sides have ended (or the connection was cut). */
  done: Promise<RelayResult>;
  /** Resets both sides now. */
  cut(): void;
}

/** What the proxy needs of a relay (tests force the Node path by passing none). */
export interface ByteRelay {
  /**
   * Hands a connected pair over, both sockets no longer read by Node. Undefined when the relay did
   * not take it: the caller still owns both sockets. Otherwise the caller must destroy its sockets.
   */
  take(client: Socket, upstream: Socket, handOver: HandOver): Promise<RelayedConnection | undefined>;
}

export interface SpliceRelayOptions {
  exec: Exec;
  logger: Logger;
  /** Where the compiled relay is kept (built once per version of relay.c). */
  dir: string;
  /** Most connections the relay holds at once (default: what its descriptor limit allows). */
  maxConnections?: number;
  /** How long a hand-over may wait for the relay's answer before the relay counts as stuck (default 5 s). */
  answerTimeoutMs?: number;
  /** First delay before starting again after the relay ended (default 200 ms, doubling to 5 s). */
  restartDelayMs?: number;
}

interface Pending {
  resolve(connection: RelayedConnection | undefined): void;
  handedOver: { bytesOut: number; bytesIn: number };
}

interface Held {
  resolve(result: RelayResult): void;
  handedOver: { bytesOut: number; bytesIn: number };
}

/** The descriptor under a Node socket (Node keeps it on the handle on Unix). */
function fdOf(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : undefined;
}

/** Stops libuv reading a socket (pause() alone keeps filling Node's buffer up to its high-water mark). */
export function stopReading(socket: Socket): void {
  const handle = (socket as unknown as { _handle?: { reading?: boolean; readStop?: () => number } })._handle;
  if (!handle?.readStop) return;
  handle.readStop();
  // Node's own flag: a later resume() (the Node relay) starts reading again.
  handle.reading = false;
}

/** Stops reading and takes what Node had read already and not given out. */
export function detach(socket: Socket): Buffer {
  const chunks: Buffer[] = [];
  socket.pause();
  for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) {
    chunks.push(chunk);
  }
  // read() may have asked libuv for more: stopped again, synchronously, before any can arrive.
  stopReading(socket);
  return Buffer.concat(chunks);
}

export class SpliceRelay implements ByteRelay {
  readonly #o: SpliceRelayOptions;
  #program: string | undefined;
  #child: ChildProcessWithoutNullStreams | undefined;
  #ready = false;
  #closed = false;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  readonly #held = new Map<number, Held>();
  #restartDelay: number;
  #restartTimer: NodeJS.Timeout | undefined;
  #startedAt = 0;
  #taken = 0;

  constructor(options: SpliceRelayOptions) {
    this.#o = options;
    this.#restartDelay = options.restartDelayMs ?? 200;
  }

  /**
   * Builds (cc, once per version) and starts the relay; false, with one warning, when it cannot be
   * (no cc, an old kernel): the proxy then relays in Node.
   */
  async start(): Promise<boolean> {
    const built = await buildCProgram(this.#o.exec, this.#o.dir, "egress-relay", RELAY_SOURCE).catch(
      (err: unknown) => ({ path: undefined, reason: (err as Error).message }),
    );
    if (built.path === undefined) {
      this.#o.logger.warn("the egress proxy relays in Node (slower): its splice relay cannot be built", {
        reason: built.reason,
      });
      return false;
    }
    this.#program = built.path;
    const ready = await this.#spawn();
    if (!ready) {
      this.#o.logger.warn("the egress proxy relays in Node (slower): its splice relay does not start");
      this.#closed = true;
      this.#child?.kill("SIGKILL");
    }
    return ready;
  }

  /** Whether connections are handed to the relay now. */
  get available(): boolean {
    return this.#ready && !this.#closed;
  }

  /** The relay's process id while it runs (tests). */
  get pid(): number | undefined {
    return this.#ready ? this.#child?.pid : undefined;
  }

  /** Connections handed over since the agent started (all relays). */
  get taken(): number {
    return this.#taken;
  }

  /** Connections the relay holds now. */
  get held(): number {
    return this.#held.size;
  }

  #spawn(): Promise<boolean> {
    const program = this.#program;
    if (program === undefined) return Promise.resolve(false);
    const args = [String(process.pid)];
    if (this.#o.maxConnections !== undefined) args.push(String(this.#o.maxConnections));
    const child = spawn(program, args, { stdio: ["pipe", "pipe", "pipe"] });
    this.#child = child;
    this.#startedAt = Date.now();
    child.stdin.on("error", () => {});
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (text: string) => this.#o.logger.warn("egress relay", { stderr: text.trim() }));
    return new Promise((resolve) => {
      let answered = false;
      const settle = (ready: boolean) => {
        if (answered) return;
        answered = true;
        resolve(ready);
      };
      const lines = createInterface({ input: child.stdout });
      lines.on("line", (line) => {
        if (line.startsWith("R ")) {
          this.#ready = true;
          settle(true);
          return;
        }
        this.#answer(line);
      });
      child.once("error", (err) => {
        this.#o.logger.warn("the egress relay could not be started", { err });
        settle(false);
      });
      // "close", not "exit": every answer it wrote is read by then.
      child.once("close", (code, signal) => {
        settle(false);
        this.#ended(child, code, signal);
      });
    });
  }

  #answer(line: string): void {
    const [kind, idText, a, b] = line.split(" ");
    const id = Number(idText);
    if (kind === "T" || kind === "F") {
      const pending = this.#pending.get(id);
      this.#pending.delete(id);
      if (!pending) return;
      if (kind === "F") {
        this.#o.logger.debug("the egress relay did not take a connection", { errno: Number(a) });
        pending.resolve(undefined);
        return;
      }
      // Registered now, not after an await: its D may be the next line of the same chunk.
      let resolveDone!: (result: RelayResult) => void;
      const done = new Promise<RelayResult>((resolve) => {
        resolveDone = resolve;
      });
      this.#held.set(id, { resolve: resolveDone, handedOver: pending.handedOver });
      this.#taken++;
      const child = this.#child;
      pending.resolve({
        done,
        cut: () => {
          if (this.#held.has(id) && this.#child === child) child?.stdin.write(`K ${id}\n`);
        },
      });
    } else if (kind === "D") {
      const held = this.#held.get(id);
      this.#held.delete(id);
      held?.resolve({ bytesOut: Number(a), bytesIn: Number(b), cut: false });
    } else if (kind === "X") {
      const held = this.#held.get(id);
      this.#held.delete(id);
      held?.resolve({ bytesOut: 0, bytesIn: 0, cut: false, refused: true });
    }
  }

  #ended(child: ChildProcessWithoutNullStreams, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.#child) return;
    this.#ready = false;
    this.#child = undefined;
    // Not taken: the agent still has both sockets (any copies the relay took died with it).
    for (const pending of this.#pending.values()) pending.resolve(undefined);
    this.#pending.clear();
    const cut = this.#held.size;
    for (const held of this.#held.values()) held.resolve({ ...held.handedOver, cut: true });
    this.#held.clear();
    if (this.#closed) return;
    // A relay that keeps dying is started less and less often; one that ran a while, right away.
    if (Date.now() - this.#startedAt > 30_000) this.#restartDelay = this.#o.restartDelayMs ?? 200;
    const delay = this.#restartDelay;
    this.#restartDelay = Math.min(this.#restartDelay * 2, 5000);
    this.#o.logger.warn("the egress relay ended; the connections it held are cut, and it starts again", {
      code,
      signal,
      cut,
      restartInMs: delay,
    });
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      if (!this.#closed) void this.#spawn();
    }, delay);
    this.#restartTimer.unref();
  }

  async take(client: Socket, upstream: Socket, handOver: HandOver): Promise<RelayedConnection | undefined> {
    const child = this.#child;
    const clientFd = fdOf(client);
    const upstreamFd = fdOf(upstream);
    if (!this.available || !child || clientFd === undefined || upstreamFd === undefined) return undefined;
    const id = this.#nextId++;
    const flags = (handOver.clientEnded ? 1 : 0) | (handOver.upstreamEnded ? 2 : 0) | (handOver.connecting ? 4 : 0);
    const header = `C ${id} ${clientFd} ${upstreamFd} ${flags} ${handOver.toUpstream.length} ${handOver.toClient.length}\n`;
    return new Promise<RelayedConnection | undefined>((resolve) => {
      // A relay that does not answer is stuck: killed (and started again); the connection stays the caller's.
      const stuck = setTimeout(() => {
        if (!this.#pending.has(id) || this.#child !== child) return;
        this.#o.logger.warn("the egress relay did not answer a hand-over: killing it");
        child.kill("SIGKILL");
      }, this.#o.answerTimeoutMs ?? 5000);
      this.#pending.set(id, {
        resolve: (connection) => {
          clearTimeout(stuck);
          resolve(connection);
        },
        handedOver: { bytesOut: handOver.toUpstream.length, bytesIn: handOver.toClient.length },
      });
      child.stdin.write(Buffer.concat([Buffer.from(header), handOver.toUpstream, handOver.toClient]));
    });
  }

  /** Stops the relay (every connection it holds is cut) and does not start it again. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    const child = this.#child;
    if (!child) return;
    const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
    child.stdin.end();
    const kill = setTimeout(() => child.kill("SIGKILL"), 2000);
    await closed;
    clearTimeout(kill);
  }
}
