import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { connect } from "node:net";
import { execa } from "execa";

/**
 * The battery's own little network: a "test host" in a netns this test creates, with a private-range
 * address (reachable from the root netns, like any host on the agent's LAN), a stand-in metadata service
 * on 169.254.169.254, and a stand-in public address. A TCP service answers on port 80 of all three; a
 * UDP receiver records every datagram (source and payload) on `udpPort`.
 *
 * Sandbox egress is pointed here and nowhere else: `captureSlots` adds, per slot host veth, a
 * policy-routing rule whose table only routes into this netns, followed by an `unreachable` rule, so a
 * packet leaving that slot — whatever its destination — reaches this netns or nothing. Rules match the
 * interface by name, so they are installed before the agent creates the slots (no window in which a
 * sandbox with egress could reach anything else). The root netns's
 * main routing table is never changed, and no address outside this machine is ever sent to.
 */

/** A public-looking address for the egress path (formerly the 6to4 relay anycast, RFC 7526). Only ever
 * routed, from a captured slot, into the test netns. */
const PUBLIC_STAND_IN_NET = "192.88.99";
export const METADATA_IP = "169.254.169.254";

export interface TestNet {
  netns: string;
  /** Root-netns end of the test host's veth. */
  gatewayIp: string;
  /** The test host's private-range address. */
  privateIp: string;
  publicIp: string;
  udpPort: number;
  /** Datagrams received so far, as "source payload" lines. */
  datagrams(): string[];
  /** Sends everything that arrives from these slot host veths into the test netns (egress → test host). */
  captureSlots(hostVeths: readonly string[]): Promise<void>;
  stop(): Promise<void>;
}

function probe(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: 1_000 });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(false));
  });
}

async function routedSubnets(): Promise<string> {
  return (await execa("ip", ["-4", "route", "show", "table", "all"])).stdout;
}

const UDP_RECEIVER = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(65535)
    print(addr[0], data.decode(errors="replace").strip(), flush=True)
`;

export async function startTestNet(): Promise<TestNet> {
  const suffix = randomBytes(3).toString("hex");
  const netns = `ws${suffix}`;
  const veth = `ws${suffix}r`;
  const routes = await routedSubnets();
  let octet = randomInt(16, 250);
  for (let i = 0; i < 50 && routes.includes(`172.29.${octet}.`); i++) octet = randomInt(16, 250);
  const gatewayIp = `172.29.${octet}.1`;
  const privateIp = `172.29.${octet}.2`;
  const publicIp = `${PUBLIC_STAND_IN_NET}.${randomInt(2, 250)}`;
  const udpPort = randomInt(20_000, 40_000);
  const table = randomInt(20_000, 30_000);
  const rulePref = randomInt(20_000, 30_000);
  const children: ChildProcess[] = [];
  const captured: string[] = [];
  const lines: string[] = [];

  const stop = async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    if (captured.length > 0) {
      const batch = captured.flatMap((hostVeth) => [
        `rule del iif ${hostVeth} lookup ${table} pref ${rulePref}`,
        `rule del iif ${hostVeth} unreachable pref ${rulePref + 1}`,
      ]);
      await execa("ip", ["-force", "-batch", "-"], { input: `${batch.join("\n")}\n`, reject: false });
    }
    await execa("ip", ["route", "flush", "table", String(table)], { reject: false });
    await execa("ip", ["netns", "del", netns], { reject: false });
    await execa("ip", ["link", "del", veth], { reject: false });
  };

  try {
    await execa("ip", ["netns", "add", netns]);
    await execa("ip", ["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns]);
    await execa("ip", ["addr", "add", `${gatewayIp}/30`, "dev", veth]);
    await execa("ip", ["link", "set", veth, "up"]);
    const inside = [
      "link set lo up",
      `addr add ${privateIp}/30 dev eth0`,
      "link set eth0 up",
      `addr add ${METADATA_IP}/32 dev lo`,
      `addr add ${publicIp}/32 dev lo`,
    ];
    await execa("ip", ["-n", netns, "-batch", "-"], { input: `${inside.join("\n")}\n` });
    // Only this table routes captured slots, and only into the test netns.
    await execa("ip", ["route", "add", "default", "via", privateIp, "dev", veth, "table", String(table)]);

    const tcp = spawn(
      "ip",
      ["netns", "exec", netns, "socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo test-host"],
      { stdio: "ignore" },
    );
    children.push(tcp);
    const udp = spawn("ip", ["netns", "exec", netns, "python3", "-u", "-c", UDP_RECEIVER, String(udpPort)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    children.push(udp);
    let buffered = "";
    const ready = new Promise<void>((resolve) => {
      udp.stdout?.on("data", (chunk: Buffer) => {
        buffered += chunk.toString();
        const parts = buffered.split("\n");
        buffered = parts.pop() ?? "";
        for (const line of parts) {
          if (line === "ready") resolve();
          else lines.push(line);
        }
      });
    });
    await Promise.race([
      ready,
      new Promise((_, reject) => setTimeout(() => reject(new Error("test host UDP receiver did not start")), 10_000)),
    ]);
    let up = false;
    for (let i = 0; i < 50 && !up; i++) {
      up = await probe(privateIp, 80);
      if (!up) await new Promise((r) => setTimeout(r, 100));
    }
    if (!up) throw new Error("test host TCP service did not start");
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    netns,
    gatewayIp,
    privateIp,
    publicIp,
    udpPort,
    datagrams: () => [...lines],
    async captureSlots(hostVeths: readonly string[]) {
      const fresh = hostVeths.filter((v) => !captured.includes(v));
      captured.push(...fresh);
      // Should the table ever lose its route, the next rule refuses rather than falling through to main.
      const batch = fresh.flatMap((hostVeth) => [
        `rule add iif ${hostVeth} lookup ${table} pref ${rulePref}`,
        `rule add iif ${hostVeth} unreachable pref ${rulePref + 1}`,
      ]);
      await execa("ip", ["-batch", "-"], { input: `${batch.join("\n")}\n` });
    },
    stop,
  };
}

/** Opens a TCP connection from the test process; true when something answered. */
export const probeFromHost = probe;
