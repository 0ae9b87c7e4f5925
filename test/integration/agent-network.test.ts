import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { connect, createServer, type Server } from "node:net";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  IMAGES_ROOT,
  newSandboxId,
  readState,
  requireImage,
  requireRoot,
  slotAddress,
  TEMPLATE,
  text,
} from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";

/**
 * Isolation and the proxy. From inside sandbox A: sandbox B's envd, the agent's port, a service on the
 * host, and a private-range address held by a test host in a netns this test creates are all
 * unreachable, while the same targets answer from the host (so the probes could have succeeded).
 * Egress is off, and every address probed lives on this machine in namespaces the tests created.
 */

/** Opens a TCP connection from the test process; resolves "open" or "closed". */
function probeFromHost(host: string, port: number): Promise<"open" | "closed"> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: 2_000 });
    socket.once("connect", () => {
      socket.destroy();
      resolve("open");
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve("closed");
    });
    socket.once("error", () => resolve("closed"));
  });
}

describe("agent: network isolation and the proxy", () => {
  let agent: AgentProcess;
  let hostService: Server;
  let hostServicePort = 0;
  const suffix = randomBytes(3).toString("hex");
  const testNetns = `wt${suffix}`;
  const testVeth = `wt${suffix}r`;
  const octet = 16 + ((randomBytes(1)[0] ?? 0) % 200);
  const testHostIp = `172.31.${octet}.2`;
  const testHostPort = 20_000 + ((randomBytes(2).readUInt16BE(0) ?? 0) % 20_000);
  let testHostServer: ChildProcess | undefined;

  beforeAll(async () => {
    requireRoot();
    await requireImage();
    // The agent listens on every address, so that "the agent's port" is really there to be reached.
    agent = await startAgentProcess({ runtime: "namespace", rootDir: IMAGES_ROOT, listenAll: true });
    // A service on the host (stand-in for anything the host runs), on every address.
    hostService = createServer((s) => {
      s.on("error", () => {});
      s.end("host-service\n");
    });
    await new Promise<void>((r) => hostService.listen(0, "0.0.0.0", () => r()));
    const address = hostService.address();
    hostServicePort = typeof address === "object" && address !== null ? address.port : 0;
    // A test host with a private-range address, in its own netns, reachable from the root netns.
    await execa("ip", ["netns", "add", testNetns]);
    await execa("ip", ["link", "add", testVeth, "type", "veth", "peer", "name", "eth0", "netns", testNetns]);
    await execa("ip", ["addr", "add", `172.31.${octet}.1/30`, "dev", testVeth]);
    await execa("ip", ["link", "set", testVeth, "up"]);
    await execa("ip", ["-n", testNetns, "addr", "add", `${testHostIp}/30`, "dev", "eth0"]);
    await execa("ip", ["-n", testNetns, "link", "set", "eth0", "up"]);
    await execa("ip", ["-n", testNetns, "link", "set", "lo", "up"]);
    testHostServer = spawn("ip", [
      "netns",
      "exec",
      testNetns,
      "socat",
      `TCP-LISTEN:${testHostPort},bind=${testHostIp},fork,reuseaddr`,
      "SYSTEM:echo test-host",
    ]);
    for (let i = 0; i < 50 && (await probeFromHost(testHostIp, testHostPort)) === "closed"; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  afterAll(async () => {
    if (testHostServer?.pid) process.kill(testHostServer.pid, "SIGKILL");
    await execa("ip", ["netns", "del", testNetns], { reject: false });
    await execa("ip", ["link", "del", testVeth], { reject: false });
    await new Promise<void>((r) => (hostService ? hostService.close(() => r()) : r()));
    await agent?.stop();
  });

  it("keeps a sandbox away from other sandboxes, the agent, host services and private ranges", async () => {
    const c = agent.client;
    const a = newSandboxId();
    const b = newSandboxId();
    await Promise.all([
      c.createSandbox({ sandboxId: a, template: TEMPLATE, internetAccess: true }),
      c.createSandbox({ sandboxId: b, template: TEMPLATE, internetAccess: true }),
    ]);
    const bAddress = await slotAddress(agent, b);
    const aState = await readState(agent, a);
    const aNetns = `${agent.netPrefix}-${aState.slot?.index}`;
    const aAddress = await slotAddress(agent, a);
    // The host end of A's veth: A's gateway, where host services and the agent are one hop away.
    const aGateway = aAddress.replace(/\.(\d+)$/, (_, last: string) => `.${Number(last) - 1}`);

    const targets = {
      ownEnvd: ["127.0.0.1", 49983],
      sandboxB: [bAddress, 49983],
      agentPort: [aGateway, agent.port],
      hostService: [aGateway, hostServicePort],
      testHost: [testHostIp, testHostPort],
    } as const;
    // Controls: from the host, every target but A's own loopback answers.
    expect(await probeFromHost(bAddress, 49983)).toBe("open");
    expect(await probeFromHost(aGateway, hostServicePort)).toBe("open");
    expect(await probeFromHost(testHostIp, testHostPort)).toBe("open");

    const script = Object.entries(targets)
      .map(
        ([name, [host, port]]) =>
          `(timeout 3 bash -c 'exec 3<>/dev/tcp/${host}/${port}' 2>/dev/null && echo ${name}=open || echo ${name}=closed) &`,
      )
      .join("\n");
    const result = await c.exec({ sandboxId: a, cmd: "/bin/bash", args: ["-c", `${script}\nwait`] });
    const seen = Object.fromEntries(
      text(result.stdout)
        .trim()
        .split("\n")
        .map((l) => l.split("=")),
    );
    expect(seen).toEqual({
      ownEnvd: "open",
      sandboxB: "closed",
      agentPort: "closed",
      hostService: "closed",
      testHost: "closed",
    });
    // The private-range rule itself dropped them (not a missing route or the egress switch).
    const counter = await execa("ip", [
      "netns",
      "exec",
      aNetns,
      "nft",
      "list",
      "counter",
      "inet",
      "wrenn",
      "private_dropped",
    ]);
    expect(Number(/packets (\d+)/.exec(counter.stdout)?.[1] ?? "0")).toBeGreaterThanOrEqual(4);
    // As root inside the sandbox, the firewall cannot be changed (CAP_NET_ADMIN is dropped).
    const flush = await c.exec({
      sandboxId: a,
      cmd: "/bin/bash",
      args: ["-c", "ip link add wrtest type dummy 2>&1; echo rc=$?; grep CapBnd /proc/self/status"],
      user: "root",
    });
    expect(text(flush.stdout)).toMatch(/rc=[1-9]/);
    await Promise.all([c.destroySandbox({ sandboxId: a }), c.destroySandbox({ sandboxId: b })]);
  });

  it("proxies HTTP and upgraded connections to guest ports, and says why when it cannot", async () => {
    const c = agent.client;
    const id = newSandboxId();
    await c.createSandbox({ sandboxId: id, template: TEMPLATE });
    const auth = { authorization: `Bearer ${agent.token}` };
    const echoServer = [
      "import socket, threading",
      "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 8081)); s.listen(8)",
      "def serve(c):",
      "    data = b''",
      "    while b'\\r\\n\\r\\n' not in data: data += c.recv(4096)",
      "    c.sendall(b'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: echo\\r\\nConnection: Upgrade\\r\\n\\r\\n')",
      "    while True:",
      "        chunk = c.recv(4096)",
      "        if not chunk: break",
      "        c.sendall(chunk.upper())",
      "while True:",
      "    conn, _ = s.accept(); threading.Thread(target=serve, args=(conn,), daemon=True).start()",
    ].join("\n");
    await c.writeFile({ sandboxId: id, path: "/home/user/echo.py", content: new TextEncoder().encode(echoServer) });
    await c.writeFile({
      sandboxId: id,
      path: "/home/user/www/index.html",
      content: new TextEncoder().encode("served by the guest"),
    });
    await c.exec({
      sandboxId: id,
      cmd: "/bin/bash",
      args: [
        "-c",
        "cd www && (nohup python3 -m http.server 8080 >/dev/null 2>&1 &); (nohup python3 ../echo.py >/dev/null 2>&1 &)",
      ],
    });
    let page: Response | undefined;
    for (let i = 0; i < 50; i++) {
      page = await fetch(`${agent.url}/proxy/${id}/8080/index.html`, { headers: auth });
      if (page.status === 200) break;
      await page.arrayBuffer();
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(page?.status).toBe(200);
    expect(await page?.text()).toBe("served by the guest");

    // A service that listens on the guest's loopback only is reachable too (envd forwards it).
    await c.exec({
      sandboxId: id,
      cmd: "/bin/bash",
      args: ["-c", "cd www && (nohup python3 -m http.server 8082 --bind 127.0.0.1 >/dev/null 2>&1 &)"],
    });
    let local: Response | undefined;
    for (let i = 0; i < 100; i++) {
      local = await fetch(`${agent.url}/proxy/${id}/8082/index.html`, { headers: auth });
      if (local.status === 200) break;
      await local.arrayBuffer();
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(local?.status).toBe(200);
    expect(await local?.text()).toBe("served by the guest");

    const health = await fetch(`${agent.url}/proxy/${id}/49983/health`, { headers: auth });
    expect(health.status).toBeLessThan(300);
    expect((await fetch(`${agent.url}/proxy/${id}/8080/`)).status).toBe(401);
    const closed = await fetch(`${agent.url}/proxy/${id}/9/`, { headers: auth });
    expect(closed.status).toBe(502);
    expect(await closed.text()).toMatch(/port is not open/);
    expect((await fetch(`${agent.url}/proxy/${newSandboxId()}/8080/`, { headers: auth })).status).toBe(404);

    // An upgraded connection streams both ways.
    const echoed = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port: agent.port });
      let received = "";
      socket.on("data", (d) => {
        received += d.toString();
        if (received.includes("\r\n\r\n") && !received.includes("HELLO")) socket.write("hello through the proxy");
        if (received.includes("HELLO THROUGH THE PROXY")) {
          socket.destroy();
          resolve(received);
        }
      });
      socket.on("error", reject);
      socket.write(
        `GET /proxy/${id}/8081/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${agent.token}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n`,
      );
      setTimeout(() => reject(new Error(`no echo; got ${JSON.stringify(received)}`)), 10_000);
    });
    expect(echoed).toMatch(/^HTTP\/1\.1 101/);

    await c.pauseSandbox({ sandboxId: id });
    const paused = await fetch(`${agent.url}/proxy/${id}/8080/index.html`, { headers: auth });
    expect(paused.status).toBe(502);
    expect(((await paused.json()) as { error: { code: string } }).error.code).toBe("SANDBOX_PAUSED");
    await c.resumeSandbox({ sandboxId: id });
    expect((await fetch(`${agent.url}/proxy/${id}/8080/index.html`, { headers: auth })).status).toBe(200);
    await c.destroySandbox({ sandboxId: id });
  });
});
