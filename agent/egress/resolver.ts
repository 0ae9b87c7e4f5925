import { createSocket, type RemoteInfo, type Socket as UdpSocket } from "node:dgram";
import { connect, createServer, isIPv6, type Server, type Socket } from "node:net";
import dnsPacket, { type Answer, type DecodedPacket } from "dns-packet";
import { judgeEgress } from "../../lib/egress-policy.js";
import type { DnsUpstream } from "../config.js";
import type { Logger } from "../logger.js";
import type { ConnectionDecision, ConnectionLog } from "./connection-log.js";
import type { ResolvedNames } from "./resolved-names.js";
import { type EgressLookup, platformBlock } from "./targets.js";

/**
 * The per-sandbox resolver: a policy sandbox's port-53 traffic is DNAT'd to it (UDP and TCP). It
 * knows the sandbox by the packet's source (the slot address), judges the question's name against the
 * sandbox's policy, answers REFUSED for a denied name, and forwards an allowed one upstream. From the
 * answer it removes addresses in the platform's blocked ranges (DNS rebinding) and AAAA records (slots
 * have no IPv6); for a name an allowOut rule names it opens the answer's A addresses in the slot's
 * firewall for the answer's TTL before the guest sees them. Every question but AAAA is logged.
 */

export interface EgressResolverOptions {
  targets: EgressLookup;
  log: Pick<ConnectionLog, "append">;
  logger: Logger;
  upstreams: readonly DnsUpstream[];
  port: number;
  /** Default 0.0.0.0 (slot packets arrive DNAT'd to the slot's host address). */
  host?: string;
  /** Whole time an upstream may take, across every upstream tried (default 3 s). */
  timeoutMs?: number;
  /** The host's own addresses (blocked in answers as in the proxy); default none. */
  localAddresses?: () => ReadonlySet<string>;
  /** Where answered names are kept for the proxy's connections that carry no name of their own. */
  resolvedNames?: ResolvedNames;
  /** Questions of one sandbox in flight at once; more are answered REFUSED (default 128). */
  maxInFlightPerSandbox?: number;
  /** TCP connections of one sandbox open at once; more are closed as they arrive (default 32). */
  maxTcpConnectionsPerSandbox?: number;
  /**
   * A TCP connection must complete a whole message within this long of opening or of its last
   * answer, else it is closed (default 10 s): a trickle of one byte a second does not keep it.
   */
  tcpIdleMs?: number;
}

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, REFUSED: 5 } as const;
const QR = 0x8000;
const MAX_TCP_MESSAGE = 65_535;
const TCP_IDLE_MS = 10_000;
/** Pipelined messages of one TCP connection waiting for their answers before it is read no further. */
const TCP_BACKLOG = 8;
/** Bounds on a TTL the firewall keeps (as the kernel side clamps). */
const MIN_TTL = 5;
const MAX_TTL = 3600;
/** The same question with the same outcome within this window is logged once (resolver retries). */
const REPEAT_WINDOW_MS = 2000;

export class EgressResolver {
  readonly #o: EgressResolverOptions;
  readonly #timeoutMs: number;
  #udp: UdpSocket | undefined;
  #tcp: Server | undefined;
  readonly #tcpSockets = new Set<Socket>();
  readonly #inFlight = new Map<string, number>();
  readonly #tcpOpen = new Map<string, number>();
  /** When each (sandbox, name, verdict, answer) was last logged: repeats within a moment are not. */
  readonly #recent = new Map<string, number>();

  constructor(options: EgressResolverOptions) {
    this.#o = options;
    this.#timeoutMs = options.timeoutMs ?? 3000;
  }

  /**
   * Binds UDP and TCP on one port; a port in use fails with a message naming AGENT_DNS_PORT. With port
   * 0 the kernel picks the UDP port and TCP takes the same number, which another socket may already
   * hold: then both are let go and another number is tried.
   */
  async start(): Promise<void> {
    const host = this.#o.host ?? "0.0.0.0";
    const attempts = this.#o.port === 0 ? 8 : 1;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#bind(host);
        break;
      } catch (err) {
        if (attempt >= attempts || (err as { cause?: NodeJS.ErrnoException }).cause?.code !== "EADDRINUSE") throw err;
      }
    }
    this.#o.logger.info("egress resolver listening", {
      host,
      port: this.port,
      upstreams: this.#o.upstreams.map((u) => `${u.address}:${u.port}`),
    });
  }

  async #bind(host: string): Promise<void> {
    const udp = createSocket({ type: isIPv6(host) ? "udp6" : "udp4" });
    udp.on("message", (msg, rinfo) => {
      void this.#onUdp(udp, msg, rinfo);
    });
    await new Promise<void>((resolve, reject) => {
      udp.once("error", (err) => reject(bindError(err, host, this.#o.port)));
      udp.bind(this.#o.port, host, () => resolve());
    });
    udp.on("error", (err) => this.#o.logger.warn("resolver UDP socket error", { err }));
    const tcp = createServer((socket) => this.#onTcp(socket));
    await new Promise<void>((resolve, reject) => {
      tcp.once("error", (err) => reject(bindError(err, host, this.#o.port)));
      // The same port as UDP (with port 0, the one the kernel picked for UDP).
      tcp.listen(udp.address().port, host, () => resolve());
    }).catch((err: unknown) => {
      udp.close();
      throw err;
    });
    this.#udp = udp;
    this.#tcp = tcp;
  }

  /** The bound port (useful with port 0 in tests). */
  get port(): number {
    const address = this.#udp?.address();
    return address?.port ?? this.#o.port;
  }

  async close(): Promise<void> {
    // Closing twice (or a socket whose start failed) is not an error.
    const udp = this.#udp;
    this.#udp = undefined;
    try {
      udp?.close();
    } catch {}
    for (const s of this.#tcpSockets) s.destroy();
    await new Promise<void>((resolve) => (this.#tcp ? this.#tcp.close(() => resolve()) : resolve()));
  }

  async #onUdp(udp: UdpSocket, msg: Buffer, rinfo: RemoteInfo): Promise<void> {
    const reply = await this.#answer(msg, rinfo.address, "udp").catch((err: unknown) => {
      this.#o.logger.warn("resolver failed to answer", { err });
      return undefined;
    });
    if (reply) udp.send(reply, rinfo.port, rinfo.address);
  }

  #onTcp(socket: Socket): void {
    const source = socket.remoteAddress ?? "";
    const owner = this.#o.targets.bySlotIp(source);
    // Not a sandbox: say nothing (no open resolver on the host's addresses).
    if (owner === undefined) {
      socket.destroy();
      return;
    }
    // A guest opening connections without end must not take every descriptor of the agent.
    const open = this.#tcpOpen.get(owner.sandboxId) ?? 0;
    if (open >= (this.#o.maxTcpConnectionsPerSandbox ?? 32)) {
      socket.destroy();
      return;
    }
    this.#tcpOpen.set(owner.sandboxId, open + 1);
    this.#tcpSockets.add(socket);
    socket.on("close", () => {
      this.#tcpSockets.delete(socket);
      clearTimeout(idle);
      const left = (this.#tcpOpen.get(owner.sandboxId) ?? 1) - 1;
      if (left <= 0) this.#tcpOpen.delete(owner.sandboxId);
      else this.#tcpOpen.set(owner.sandboxId, left);
    });
    socket.on("error", () => {});
    // Not the socket's own idle timeout, which any byte resets: only a whole message or an answer does.
    const idleMs = this.#o.tcpIdleMs ?? TCP_IDLE_MS;
    let idle = setTimeout(() => socket.destroy(), idleMs);
    const stillAlive = () => {
      clearTimeout(idle);
      idle = setTimeout(() => socket.destroy(), idleMs);
    };
    let buffered = Buffer.alloc(0);
    let chain = Promise.resolve();
    let waiting = 0;
    const readOn = () => {
      if (waiting < TCP_BACKLOG && !socket.destroyed) socket.resume();
    };
    socket.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const length = buffered.readUInt16BE(0);
        if (buffered.length < 2 + length) break;
        const msg = Buffer.from(buffered.subarray(2, 2 + length));
        buffered = buffered.subarray(2 + length);
        stillAlive();
        // A client pipelining without reading its answers is read no further until they are out.
        if (++waiting >= TCP_BACKLOG || socket.writableLength > MAX_TCP_MESSAGE * 4) socket.pause();
        // Answers go back in order (RFC 7766 allows any order; in order is simplest for clients).
        chain = chain.then(async () => {
          const reply = await this.#answer(msg, source, "tcp").catch(() => undefined);
          if (reply && !socket.destroyed) socket.write(withLength(reply));
          stillAlive();
          waiting--;
          // Nor while its unread answers pile up in the agent: read on when they have drained.
          if (socket.writableLength > MAX_TCP_MESSAGE * 4) socket.once("drain", readOn);
          else readOn();
        });
      }
    });
  }

  /** The reply to one query message from `source`, or undefined to stay silent. */
  async #answer(msg: Buffer, source: string, transport: "udp" | "tcp"): Promise<Buffer | undefined> {
    const target = this.#o.targets.bySlotIp(source);
    if (!target) return undefined;
    let query: DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return msg.length >= 12 ? rawError(msg, RCODE.FORMERR) : undefined;
    }
    if (query.flag_qr) return undefined;
    // A guest flooding questions gets REFUSED beyond its share, not a socket and a process spawn each.
    const inFlight = this.#inFlight.get(target.sandboxId) ?? 0;
    if (inFlight >= (this.#o.maxInFlightPerSandbox ?? 128)) return errorReply(query, RCODE.REFUSED);
    this.#inFlight.set(target.sandboxId, inFlight + 1);
    try {
      return await this.#judgeAndForward(query, msg, target, transport);
    } finally {
      const left = (this.#inFlight.get(target.sandboxId) ?? 1) - 1;
      if (left <= 0) this.#inFlight.delete(target.sandboxId);
      else this.#inFlight.set(target.sandboxId, left);
    }
  }

  async #judgeAndForward(
    query: DecodedPacket,
    msg: Buffer,
    target: NonNullable<ReturnType<EgressLookup["bySlotIp"]>>,
    transport: "udp" | "tcp",
  ): Promise<Buffer> {
    const question = query.questions?.[0];
    if (!question) return errorReply(query, RCODE.FORMERR);
    const name = question.name.toLowerCase().replace(/\.$/, "");
    const verdict = judgeEgress(target.policy, target.internetAccess, { name });
    const logged = question.type !== "AAAA";
    const base = {
      protocol: "dns" as const,
      port: 53,
      name,
      nameSource: "dns" as const,
      rule: verdict.rule,
      list: verdict.list,
    };
    if (!verdict.allowed) {
      if (logged) await this.#log(target.sandboxId, { ...base, address: "", verdict: "denied" });
      return errorReply(query, RCODE.REFUSED);
    }
    if (question.type === "AAAA") return emptyAnswer(query);

    const upstream = await this.#forward(msg, transport).catch((err: unknown) => {
      this.#o.logger.warn("DNS upstream failed", { name, err: (err as Error).message });
      return undefined;
    });
    if (!upstream) {
      if (logged) await this.#log(target.sandboxId, { ...base, address: "", verdict: "allowed" });
      return errorReply(query, RCODE.SERVFAIL);
    }
    let response: DecodedPacket;
    try {
      response = dnsPacket.decode(upstream);
    } catch {
      return errorReply(query, RCODE.SERVFAIL);
    }
    const local = this.#o.localAddresses?.() ?? new Set<string>();
    const keep = (a: Answer) => a.type !== "AAAA" && !(a.type === "A" && platformBlock(a.data, local) !== undefined);
    const answers = response.answers ?? [];
    const additionals = response.additionals ?? [];
    // The guest may cache an A record no longer than the firewall keeps its address open.
    let capped = false;
    const cap = (a: Answer): Answer => {
      if (a.type !== "A" || (a.ttl ?? 0) <= MAX_TTL) return a;
      capped = true;
      return { ...a, ttl: MAX_TTL };
    };
    const filtered = answers.filter(keep).map(cap);
    const filteredAdditionals = additionals.filter(keep).map(cap);
    const addresses = filtered.flatMap((a) => (a.type === "A" ? [a.data] : []));
    const ttls = filtered.flatMap((a) => (a.type === "A" ? [a.ttl ?? 0] : []));
    const ttl = Math.min(MAX_TTL, Math.max(MIN_TTL, ttls.length > 0 ? Math.min(...ttls) : MIN_TTL));
    if (verdict.list === "allowOut" && addresses.length > 0) {
      try {
        await this.#o.targets.allowResolved(target.sandboxId, addresses, ttl);
      } catch (err) {
        this.#o.logger.warn("could not open resolved addresses", { sandboxId: target.sandboxId, name, err });
        return errorReply(query, RCODE.SERVFAIL);
      }
    }
    this.#o.resolvedNames?.remember(target.sandboxId, name, addresses, ttl);
    if (logged) {
      await this.#log(target.sandboxId, {
        ...base,
        address: addresses[0] ?? "",
        addresses,
        verdict: "allowed",
      });
    }
    const changed = capped || filtered.length !== answers.length || filteredAdditionals.length !== additionals.length;
    const out = changed
      ? dnsPacket.encode({ ...response, answers: filtered, additionals: filteredAdditionals })
      : Buffer.from(upstream);
    out.writeUInt16BE(query.id ?? 0, 0);
    return out;
  }

  async #log(sandboxId: string, entry: ConnectionDecision): Promise<void> {
    // A stub resolver asks each nameserver it knows, and again: one lookup is one entry, not four.
    const now = Date.now();
    const key = `${sandboxId} ${entry.name} ${entry.verdict} ${entry.addresses?.join(",") ?? ""}`;
    const last = this.#recent.get(key);
    if (last !== undefined && now - last < REPEAT_WINDOW_MS) return;
    this.#recent.set(key, now);
    if (this.#recent.size > 4096) {
      for (const [k, t] of this.#recent)
        if (now - t >= REPEAT_WINDOW_MS || this.#recent.size > 4096) this.#recent.delete(k);
    }
    await this.#o.log
      .append(sandboxId, { ...entry, endedAt: Date.now() })
      .catch((err: unknown) => this.#o.logger.warn("could not log a DNS question", { sandboxId, err }));
  }

  /** Sends the query to the upstreams in order until one answers; throws when none did in time. */
  async #forward(msg: Buffer, transport: "udp" | "tcp"): Promise<Buffer> {
    const upstreams = this.#o.upstreams;
    if (upstreams.length === 0) throw new Error("no DNS upstream configured (AGENT_DNS_UPSTREAM)");
    const deadline = Date.now() + this.#timeoutMs;
    let lastError: unknown;
    for (let i = 0; i < upstreams.length; i++) {
      const upstream = upstreams[i] as DnsUpstream;
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      // Later upstreams keep a share of the time: a dead first server must not eat all of it.
      const budget = i === upstreams.length - 1 ? remaining : Math.max(250, remaining / (upstreams.length - i));
      try {
        return transport === "udp"
          ? await udpExchange(upstream, msg, budget)
          : await tcpExchange(upstream, msg, budget);
      } catch (err) {
        lastError = err;
      }
    }
    throw lastError instanceof Error ? lastError : new Error("DNS upstream timed out");
  }
}

function bindError(err: Error, host: string, port: number): Error {
  const code = (err as NodeJS.ErrnoException).code;
  return new Error(
    code === "EADDRINUSE"
      ? `the egress resolver cannot listen on ${host}:${port}: the port is in use (set AGENT_DNS_PORT to a free port)`
      : `the egress resolver cannot listen on ${host}:${port}: ${err.message}`,
    { cause: err },
  );
}

function withLength(msg: Buffer): Buffer {
  const out = Buffer.alloc(2 + msg.length);
  out.writeUInt16BE(msg.length, 0);
  msg.copy(out, 2);
  return out;
}

/** Response flags: opcode and RD copied from the query, RA set, and the rcode. */
function replyFlags(queryFlags: number, rcode: number): number {
  return (queryFlags & 0x7900) | 0x0080 | rcode;
}

function errorReply(query: DecodedPacket, rcode: number): Buffer {
  return dnsPacket.encode({
    type: "response",
    id: query.id,
    flags: replyFlags(query.flags ?? 0, rcode),
    questions: query.questions,
  });
}

function emptyAnswer(query: DecodedPacket): Buffer {
  return errorReply(query, RCODE.NOERROR);
}

/** An error reply to a message dns-packet could not decode: the header alone, no question. */
function rawError(msg: Buffer, rcode: number): Buffer {
  const out = Buffer.alloc(12);
  msg.copy(out, 0, 0, 2);
  out.writeUInt16BE(QR | replyFlags(msg.readUInt16BE(2), rcode), 2);
  return out;
}

function udpExchange(upstream: DnsUpstream, msg: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = createSocket(isIPv6(upstream.address) ? "udp6" : "udp4");
    const id = msg.readUInt16BE(0);
    const done = (err: Error | undefined, reply?: Buffer) => {
      clearTimeout(timer);
      socket.close();
      if (err) reject(err);
      else resolve(reply as Buffer);
    };
    const timer = setTimeout(
      () => done(new Error(`no answer from ${upstream.address}:${upstream.port} in ${Math.round(timeoutMs)} ms`)),
      timeoutMs,
    );
    socket.on("error", (err) => done(err));
    socket.on("message", (reply, rinfo) => {
      // Only the server asked, and only the answer to this id (a fresh socket per query: a random port).
      if (rinfo.port !== upstream.port || reply.length < 12 || reply.readUInt16BE(0) !== id) return;
      done(undefined, reply);
    });
    socket.send(msg, upstream.port, upstream.address);
  });
}

function tcpExchange(upstream: DnsUpstream, msg: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: upstream.address, port: upstream.port });
    let buffered = Buffer.alloc(0);
    const done = (err: Error | undefined, reply?: Buffer) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(reply as Buffer);
    };
    const timer = setTimeout(
      () => done(new Error(`no answer from ${upstream.address}:${upstream.port} in ${Math.round(timeoutMs)} ms`)),
      timeoutMs,
    );
    socket.on("error", (err) => done(err));
    socket.on("connect", () => socket.write(withLength(msg)));
    socket.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length >= 2) {
        const length = buffered.readUInt16BE(0);
        if (length > MAX_TCP_MESSAGE) return done(new Error("oversized DNS answer"));
        if (buffered.length >= 2 + length) done(undefined, buffered.subarray(2, 2 + length));
      }
    });
    socket.on("end", () => done(new Error("upstream closed before answering")));
  });
}
