import { Resolver } from "node:dns/promises";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requireRoot } from "../helpers/agent-fixtures.js";
import { startTestInternet, type TestInternet } from "../helpers/test-internet.js";

/**
 * The egress tests' fake internet on its own (test/helpers/test-internet.ts), without an agent: from the
 * root netns its DNS server answers registered names only, its hosts serve HTTP and HTTPS under the test
 * CA, nothing goes out by the default route, and stop() leaves nothing behind.
 */

function get(
  url: string,
  options: { ca?: string; host?: string; servername?: string; lookupTo?: string } = {},
): Promise<{ status: number; body: string }> {
  const target = new URL(url);
  const request = target.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: options.lookupTo ?? target.hostname,
        port: target.port || (target.protocol === "https:" ? 443 : 80),
        path: target.pathname,
        headers: { host: options.host ?? target.hostname },
        ...(target.protocol === "https:" ? { ca: options.ca, servername: options.servername ?? target.hostname } : {}),
        timeout: 5_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

describe("test internet (the egress tests' fake internet)", () => {
  let net: TestInternet | undefined;
  const internet = () => {
    if (!net) throw new Error("not started");
    return net;
  };

  beforeAll(async () => {
    requireRoot();
    net = await startTestInternet({ extraRecords: { "rebind.test": ["10.1.2.3"] } });
  });

  afterAll(async () => {
    await net?.stop();
  });

  it("answers registered names over UDP and TCP, NXDOMAIN otherwise, and records the questions", async () => {
    const n = internet();
    const resolver = new Resolver({ timeout: 2_000, tries: 1 });
    resolver.setServers([n.dnsUpstream]);
    expect(await resolver.resolve4("a.example.test")).toEqual([n.ipOf("a.example.test")]);
    expect(await resolver.resolve4("forbidden.test")).toEqual([n.ipOf("forbidden.test")]);
    expect(await resolver.resolve4("rebind.test")).toEqual(["10.1.2.3"]);
    await expect(resolver.resolve4("nowhere.test")).rejects.toMatchObject({ code: "ENOTFOUND" });
    // TCP: dig is not everywhere; a raw length-prefixed query over node's net.
    const tcp = await execa("python3", [
      "-c",
      [
        "import socket, struct",
        "q = struct.pack('>HHHHHH', 7, 0x0100, 1, 0, 0, 0) + b''.join(bytes([len(p)]) + p.encode() for p in 'b.example.test'.split('.')) + b'\\0' + struct.pack('>HH', 1, 1)",
        `s = socket.create_connection(('${n.privateIp}', 53), 3)`,
        "s.sendall(struct.pack('>H', len(q)) + q)",
        "n = struct.unpack('>H', s.recv(2))[0]; r = b''",
        "while len(r) < n: r += s.recv(n - len(r))",
        "print('.'.join(str(b) for b in r[-4:]))",
      ].join("\n"),
    ]);
    expect(tcp.stdout.trim()).toBe(n.ipOf("b.example.test"));
    await n.waitForEvent((e) => e.kind === "dns" && e.transport === "tcp");
    await n.setRecord("c.example.test", [n.ipOf("a.example.test")]);
    expect(await resolver.resolve4("c.example.test")).toEqual([n.ipOf("a.example.test")]);
    await n.waitForEvent((e) => e.kind === "dns" && e.name === "c.example.test");
    const asked = n.dnsQuestions().map((q) => `${q.transport} ${q.name} ${q.rcode}`);
    expect(asked).toEqual(
      expect.arrayContaining([
        "udp a.example.test NOERROR",
        "udp nowhere.test NXDOMAIN",
        "tcp b.example.test NOERROR",
        "udp c.example.test NOERROR",
      ]),
    );
  });

  it("serves HTTP and HTTPS (test CA) on every test host from the root netns, saying what was asked", async () => {
    const n = internet();
    const a = n.ipOf("a.example.test");
    const plain = await get(`http://${a}/`, { host: "a.example.test" });
    expect(plain.status).toBe(200);
    expect(JSON.parse(plain.body)).toMatchObject({ address: a, port: 80, host: "a.example.test", tls: false });
    const tls = await get("https://b.example.test/", { ca: n.caPem, lookupTo: n.ipOf("b.example.test") });
    expect(JSON.parse(tls.body)).toMatchObject({ address: n.ipOf("b.example.test"), sni: "b.example.test" });
    // The certificate names every host, so a forbidden name would work if nothing refused it.
    const other = await get("https://forbidden.test/", { ca: n.caPem, lookupTo: a });
    expect(JSON.parse(other.body)).toMatchObject({ address: a, sni: "forbidden.test" });
    const unnamed = n.unnamed[0] ?? "";
    const bytes = await get(`http://${unnamed}/bytes/100000`);
    expect(bytes.body.length).toBe(100_000);
    await n.waitForEvent((e) => e.kind === "http" && e.path === "/bytes/100000" && e.bytes === 100_000);
    // Without the CA the certificate is refused (the guest must be given the CA).
    await expect(get("https://a.example.test/", { lookupTo: a })).rejects.toThrow();
    expect(await n.leakedPackets()).toBe(0);
  });

  it("leaves no netns, rule, route or nft table after stop", async () => {
    const n = await startTestInternet({ names: ["x.test"], unnamedHosts: 0 });
    const address = n.ipOf("x.test");
    await n.captureSlots(["wrnotthere-0h"]);
    await n.watchSlots("10.250.0.0/23");
    expect((await execa("ip", ["rule"])).stdout).toContain(address);
    await n.stop();
    await n.stop();
    expect((await execa("ip", ["rule"])).stdout).not.toContain(address);
    expect((await execa("ip", ["rule"])).stdout).not.toContain("wrnotthere");
    expect((await execa("ip", ["netns", "list"])).stdout).not.toContain(n.netns);
    expect((await execa("nft", ["list", "tables"])).stdout).not.toContain(n.netns.slice(2));
  });
});
