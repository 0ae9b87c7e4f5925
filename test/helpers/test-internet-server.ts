import { createSocket, type RemoteInfo } from "node:dgram";
import { readFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { createServer as createTcpServer, type Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import * as dnsPacket from "dns-packet";

/**
 * The servers of test/helpers/test-internet.ts, run by it inside the test netns (`ip netns exec … node
 * --import tsx test/helpers/test-internet-server.ts <config JSON>`): a DNS server (UDP and TCP port 53)
 * answering only the names the test registered, an HTTP server on 80, an HTTPS server on 443 (one
 * certificate for every name, from the test's CA) and a plain TCP service on `tcpPort`, all on every
 * address of the netns. Every DNS question and HTTP(S) request is reported on stdout as one JSON line;
 * the parent sends record changes on stdin, one JSON line each.
 *
 * HTTP(S) paths: `/` (any other unknown path too) answers JSON naming what was asked (address, port, SNI,
 * Host, peer); `/bytes/<n>` answers n bytes; `POST /echo` answers the byte count it received.
 */

export interface ServerConfig {
  /** Name (lower case, no trailing dot) → A records. */
  records: Record<string, string[]>;
  ttl: number;
  certFile: string;
  keyFile: string;
  tcpPort: number;
  /** Every address of the netns: a UDP socket each, so an answer leaves from the address asked. */
  dnsAddresses: string[];
}

export interface DnsEvent {
  kind: "dns";
  name: string;
  type: string;
  transport: "udp" | "tcp";
  from: string;
  rcode: "NOERROR" | "NXDOMAIN";
  answers: string[];
}

export interface HttpEvent {
  kind: "http";
  tls: boolean;
  /** Local address the request arrived at (the test host it was meant for). */
  address: string;
  port: number;
  sni?: string;
  host?: string;
  method: string;
  path: string;
  from: string;
  /** Body bytes received (POST /echo) or sent (/bytes/n). */
  bytes: number;
}

export interface TcpEvent {
  kind: "tcp";
  address: string;
  port: number;
  from: string;
}

export type ServerEvent = DnsEvent | HttpEvent | TcpEvent;

const config = JSON.parse(process.argv[2] ?? "{}") as ServerConfig;
const records = new Map<string, string[]>(Object.entries(config.records));

function emit(event: ServerEvent | { kind: "ready" } | { kind: "ack" }): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function answer(query: Buffer, transport: "udp" | "tcp", from: string): Buffer {
  const packet = dnsPacket.decode(query);
  const question = packet.questions?.[0];
  const name = (question?.name ?? "").toLowerCase().replace(/\.$/, "");
  const known = records.get(name);
  const data = question?.type === "A" ? (known ?? []) : [];
  const answers: dnsPacket.StringAnswer[] = data.map((address) => ({
    type: "A",
    name: question?.name ?? "",
    ttl: config.ttl,
    class: "IN",
    data: address,
  }));
  const rcode = known === undefined ? "NXDOMAIN" : "NOERROR";
  emit({
    kind: "dns",
    name,
    type: question?.type ?? "?",
    transport,
    from,
    rcode,
    answers: data,
  });
  return dnsPacket.encode({
    type: "response",
    id: packet.id ?? 0,
    // The low four bits of the flags are the rcode (3: NXDOMAIN).
    flags:
      dnsPacket.AUTHORITATIVE_ANSWER |
      ((packet.flags ?? 0) & dnsPacket.RECURSION_DESIRED) |
      (rcode === "NXDOMAIN" ? 3 : 0),
    questions: packet.questions ?? [],
    answers,
  });
}

// One socket per address: a socket on 0.0.0.0 would answer a question to 8.8.8.8 from the veth's
// address, which the asker (and conntrack) would not take as the answer.
const udpSockets = config.dnsAddresses.map((address) => {
  const udp = createSocket("udp4");
  udp.on("message", (msg: Buffer, rinfo: RemoteInfo) => {
    try {
      udp.send(answer(msg, "udp", rinfo.address), rinfo.port, rinfo.address);
    } catch {
      // A malformed question gets no answer.
    }
  });
  return { udp, address };
});

const dnsTcp = createTcpServer((socket) => {
  socket.on("error", () => {});
  let buffered = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 2) {
      const length = buffered.readUInt16BE(0);
      if (buffered.length < 2 + length) return;
      const query = buffered.subarray(2, 2 + length);
      buffered = buffered.subarray(2 + length);
      try {
        const reply = answer(query, "tcp", socket.remoteAddress ?? "");
        const framed = Buffer.alloc(2 + reply.length);
        framed.writeUInt16BE(reply.length, 0);
        reply.copy(framed, 2);
        socket.write(framed);
      } catch {
        socket.destroy();
      }
    }
  });
});

const ZEROS = Buffer.alloc(64 * 1024, 0x61);

function handle(tls: boolean) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket as Socket & Partial<Pick<TLSSocket, "servername">>;
    const servername = tls && typeof socket.servername === "string" ? socket.servername : undefined;
    const base = {
      kind: "http" as const,
      tls,
      address: socket.localAddress ?? "",
      port: socket.localPort ?? 0,
      ...(servername ? { sni: servername } : {}),
      ...(req.headers.host ? { host: req.headers.host } : {}),
      method: req.method ?? "GET",
      path: req.url ?? "/",
      from: socket.remoteAddress ?? "",
    };
    const bytesPath = /^\/bytes\/([0-9]+)$/.exec(req.url ?? "");
    if (req.method === "POST" && req.url === "/echo") {
      let received = 0;
      req.on("data", (chunk: Buffer) => {
        received += chunk.length;
      });
      req.on("end", () => {
        emit({ ...base, bytes: received });
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ received }));
      });
      return;
    }
    req.resume();
    if (bytesPath) {
      const total = Number(bytesPath[1]);
      emit({ ...base, bytes: total });
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(total) });
      let left = total;
      const pump = () => {
        while (left > 0) {
          const piece = left >= ZEROS.length ? ZEROS : ZEROS.subarray(0, left);
          left -= piece.length;
          if (!res.write(piece)) {
            res.once("drain", pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return;
    }
    emit({ ...base, bytes: 0 });
    const { kind: _kind, bytes: _bytes, ...whoami } = { ...base, bytes: 0 };
    res.setHeader("content-type", "application/json");
    res.end(`${JSON.stringify({ ok: true, ...whoami })}\n`);
  };
}

const http = createHttpServer(handle(false));
const https = createHttpsServer(
  { cert: readFileSync(config.certFile), key: readFileSync(config.keyFile) },
  handle(true),
);
const tcp = createTcpServer((socket) => {
  socket.on("error", () => {});
  emit({
    kind: "tcp",
    address: socket.localAddress ?? "",
    port: socket.localPort ?? 0,
    from: socket.remoteAddress ?? "",
  });
  socket.end(`tcp-ok ${socket.localAddress ?? ""}\n`);
});
for (const server of [http, https, tcp, dnsTcp]) server.on("error", (err) => fail(err));

function fail(err: Error): never {
  process.stderr.write(`test internet server: ${err.message}\n`);
  process.exit(1);
}

// Record changes from the parent: {"name": "...", "addresses": [...]} (addresses null removes the name).
let pending = "";
process.stdin.on("data", (chunk: Buffer) => {
  pending += chunk.toString();
  const lines = pending.split("\n");
  pending = lines.pop() ?? "";
  for (const line of lines) {
    if (line.trim() === "") continue;
    const change = JSON.parse(line) as { name: string; addresses: string[] | null };
    if (change.addresses === null) records.delete(change.name);
    else records.set(change.name, change.addresses);
    emit({ kind: "ack" });
  }
});
// The parent going away ends the servers.
process.stdin.on("end", () => process.exit(0));

await Promise.all([
  ...udpSockets.map(({ udp, address }) => new Promise<void>((r) => udp.bind(53, address, () => r()))),
  new Promise<void>((r) => dnsTcp.listen(53, "0.0.0.0", () => r())),
  new Promise<void>((r) => http.listen(80, "0.0.0.0", () => r())),
  new Promise<void>((r) => https.listen(443, "0.0.0.0", () => r())),
  new Promise<void>((r) => tcp.listen(config.tcpPort, "0.0.0.0", () => r())),
]);
emit({ kind: "ready" });
