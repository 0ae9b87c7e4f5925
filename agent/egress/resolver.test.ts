import { createSocket } from "node:dgram";
import { mkdtemp, rm } from "node:fs/promises";
import { connect, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import dnsPacket, { type Answer, type DecodedPacket, type Packet } from "dns-packet";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type EgressPolicy, parseEgressPolicy } from "../../lib/egress-policy.js";
import { noopLogger } from "../logger.js";
import { ConnectionLog } from "./connection-log.js";
import { ResolvedNames } from "./resolved-names.js";
import { EgressResolver } from "./resolver.js";
import type { EgressLookup } from "./targets.js";

const SB = "r1r2r3r4r5r6r7r8r9r0";

/** A fake upstream on loopback: fixed answers, one name that never answers, UDP and TCP. */
const RECORDS: Record<string, Answer[]> = {
  "a.example.test": [{ type: "A", name: "a.example.test", ttl: 30, data: "192.88.99.10" }],
  "rebind.example.test": [
    { type: "A", name: "rebind.example.test", ttl: 60, data: "10.0.0.5" },
    { type: "A", name: "rebind.example.test", ttl: 20, data: "192.88.99.11" },
    { type: "A", name: "rebind.example.test", ttl: 60, data: "169.254.169.254" },
  ],
  "open.test": [{ type: "A", name: "open.test", ttl: 300, data: "192.88.99.12" }],
  "long.example.test": [{ type: "A", name: "long.example.test", ttl: 86_400, data: "192.88.99.13" }],
  "txt.example.test": [{ type: "TXT", name: "txt.example.test", ttl: 300, data: "hello" }],
};

function upstreamAnswer(msg: Buffer): Buffer | undefined {
  const q = dnsPacket.decode(msg);
  const name = q.questions?.[0]?.name ?? "";
  if (name === "slow.example.test") return undefined;
  const answers = (RECORDS[name] ?? []).filter((a) => a.type === q.questions?.[0]?.type);
  return dnsPacket.encode({ type: "response", id: q.id, flags: 0x0180, questions: q.questions, answers });
}

let udpUpstream: ReturnType<typeof createSocket>;
let tcpUpstream: Server;
let upstreamPort: number;
let dir: string;

beforeAll(async () => {
  udpUpstream = createSocket("udp4");
  udpUpstream.on("message", (msg, rinfo) => {
    const reply = upstreamAnswer(msg);
    if (reply) udpUpstream.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => udpUpstream.bind(0, "127.0.0.1", () => r()));
  upstreamPort = udpUpstream.address().port;
  tcpUpstream = createServer((s) => {
    s.once("data", (chunk: Buffer) => {
      const reply = upstreamAnswer(chunk.subarray(2));
      if (!reply) return;
      const framed = Buffer.alloc(2 + reply.length);
      framed.writeUInt16BE(reply.length);
      reply.copy(framed, 2);
      s.end(framed);
    });
  });
  await new Promise<void>((r) => tcpUpstream.listen(upstreamPort, "127.0.0.1", () => r()));
  dir = await mkdtemp(join(tmpdir(), "wrenn-resolver-"));
});

afterAll(async () => {
  udpUpstream.close();
  await new Promise((r) => tcpUpstream.close(r));
  await rm(dir, { recursive: true, force: true });
});

let allowed: { sandboxId: string; addresses: readonly string[]; ttl: number }[];
let policy: EgressPolicy;
let log: ConnectionLog;
let resolver: EgressResolver;
let resolvedNames: ResolvedNames;

const targets: EgressLookup = {
  bySlotIp: (ip) =>
    ip === "127.0.0.1" ? { sandboxId: SB, policy: parseEgressPolicy(policy), internetAccess: true } : undefined,
  allowResolved: async (sandboxId, addresses, ttl) => {
    allowed.push({ sandboxId, addresses, ttl });
  },
};

beforeEach(async () => {
  allowed = [];
  policy = { allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] };
  await log?.flush();
  await rm(join(dir, `${SB}.jsonl`), { force: true });
  log = new ConnectionLog({ dir, logger: noopLogger });
  resolver?.close();
  resolvedNames = new ResolvedNames();
  resolver = new EgressResolver({
    resolvedNames,
    targets,
    log,
    logger: noopLogger,
    upstreams: [{ address: "127.0.0.1", port: upstreamPort }],
    port: 0,
    host: "127.0.0.1",
    // Short enough for the slow-upstream test, long enough for a loaded machine's loopback.
    timeoutMs: 1000,
  });
  await resolver.start();
});

let nextId = 1;
const query = (name: string, type: "A" | "AAAA" | "TXT" = "A"): Packet => ({
  type: "query",
  id: nextId++,
  flags: dnsPacket.RECURSION_DESIRED,
  questions: [{ type, name, class: "IN" }],
});

function askUdp(packet: Packet, source = "127.0.0.1", waitMs = 4000): Promise<DecodedPacket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket("udp4");
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error("no answer"));
    }, waitMs);
    socket.on("message", (msg) => {
      clearTimeout(timer);
      socket.close();
      resolve(dnsPacket.decode(msg));
    });
    socket.bind(0, source, () => socket.send(dnsPacket.encode(packet), resolver.port, "127.0.0.1"));
  });
}

function askTcp(packet: Packet): Promise<DecodedPacket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port: resolver.port });
    let buf = Buffer.alloc(0);
    s.on("error", reject);
    s.on("data", (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        s.destroy();
        resolve(dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0))));
      }
    });
    s.write(dnsPacket.streamEncode(packet));
  });
}

const rcode = (p: DecodedPacket) => (p as DecodedPacket & { rcode: string }).rcode;
const aRecords = (p: DecodedPacket) => (p.answers ?? []).flatMap((a) => (a.type === "A" ? [a.data] : []));

describe("EgressResolver", () => {
  it("answers an allowed name, opening its addresses for the TTL before the guest sees them", async () => {
    const reply = await askUdp(query("a.example.test"));
    expect(rcode(reply)).toBe("NOERROR");
    expect(reply.flag_qr).toBe(true);
    expect(aRecords(reply)).toEqual(["192.88.99.10"]);
    expect(allowed).toEqual([{ sandboxId: SB, addresses: ["192.88.99.10"], ttl: 30 }]);
    expect(resolvedNames.nameOf(SB, "192.88.99.10")).toBe("a.example.test");
    const [entry] = await log.list(SB, { limit: 10 });
    expect(entry).toMatchObject({
      protocol: "dns",
      name: "a.example.test",
      nameSource: "dns",
      verdict: "allowed",
      rule: "*.example.test",
      list: "allowOut",
      address: "192.88.99.10",
      addresses: ["192.88.99.10"],
    });
  });

  it("refuses a denied name and logs it, asking no upstream", async () => {
    const reply = await askUdp(query("forbidden.test"));
    expect(rcode(reply)).toBe("REFUSED");
    expect(reply.questions?.[0]?.name).toBe("forbidden.test");
    expect(allowed).toEqual([]);
    expect(await log.list(SB, { limit: 10 })).toMatchObject([
      { protocol: "dns", name: "forbidden.test", verdict: "denied", rule: "0.0.0.0/0", list: "denyOut" },
    ]);
  });

  it("logs a lookup once when the stub resolver repeats it", async () => {
    for (let i = 0; i < 4; i++) expect(rcode(await askUdp(query("forbidden.test")))).toBe("REFUSED");
    await askUdp(query("a.example.test"));
    await askUdp(query("a.example.test"));
    expect((await log.list(SB, { limit: 10 })).map((e) => [e.name, e.verdict])).toEqual([
      ["forbidden.test", "denied"],
      ["a.example.test", "allowed"],
    ]);
  });

  it("drops answer addresses in the platform's blocked ranges (DNS rebinding)", async () => {
    const reply = await askUdp(query("rebind.example.test"));
    expect(aRecords(reply)).toEqual(["192.88.99.11"]);
    expect(allowed).toEqual([{ sandboxId: SB, addresses: ["192.88.99.11"], ttl: 20 }]);
  });

  it("answers AAAA with no records, and passes other types through", async () => {
    const aaaa = await askUdp(query("a.example.test", "AAAA"));
    expect(rcode(aaaa)).toBe("NOERROR");
    expect(aaaa.answers).toEqual([]);
    const txt = await askUdp(query("txt.example.test", "TXT"));
    expect(txt.answers?.[0]).toMatchObject({ type: "TXT" });
    // AAAA is not logged (no connection follows from it); TXT is.
    expect((await log.list(SB, { limit: 10 })).map((e) => e.name)).toEqual(["txt.example.test"]);
  });

  it("caps a TTL at the hour the firewall keeps an address open", async () => {
    const reply = await askUdp(query("long.example.test"));
    expect(reply.answers?.[0]).toMatchObject({ type: "A", ttl: 3600, data: "192.88.99.13" });
    expect(allowed).toEqual([{ sandboxId: SB, addresses: ["192.88.99.13"], ttl: 3600 }]);
  });

  it("answers SERVFAIL when the upstream does not answer in time", async () => {
    const started = Date.now();
    const reply = await askUdp(query("slow.example.test"));
    expect(rcode(reply)).toBe("SERVFAIL");
    expect(Date.now() - started).toBeLessThan(2500);
  });

  it("does not open addresses of a name allowed only by default", async () => {
    policy = { allowOut: [], denyOut: ["forbidden.test"] };
    const reply = await askUdp(query("open.test"));
    expect(aRecords(reply)).toEqual(["192.88.99.12"]);
    expect(allowed).toEqual([]);
    expect(rcode(await askUdp(query("forbidden.test")))).toBe("REFUSED");
  });

  it("serves TCP the same way", async () => {
    const reply = await askTcp(query("a.example.test"));
    expect(aRecords(reply)).toEqual(["192.88.99.10"]);
    expect(rcode(await askTcp(query("forbidden.test")))).toBe("REFUSED");
  });

  it("says nothing to a source that is not a sandbox", async () => {
    await expect(askUdp(query("a.example.test"), "127.0.0.2", 300)).rejects.toThrow("no answer");
  });

  it("fails to start with a message naming the variable when the port is taken", async () => {
    const second = new EgressResolver({
      targets,
      log,
      logger: noopLogger,
      upstreams: [],
      port: resolver.port,
      host: "127.0.0.1",
    });
    await expect(second.start()).rejects.toThrow(/AGENT_DNS_PORT/);
    await resolver.close();
  });
});
