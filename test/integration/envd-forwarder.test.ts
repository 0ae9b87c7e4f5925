/**
 * The port forwarder, end to end, inside a network namespace this test creates (never the host's
 * interfaces): envd runs in the namespace with `--forward-address` set to a second address on the
 * namespace's loopback, a service listens on the namespace's 127.0.0.1, and the test checks the service
 * becomes reachable on that address, and stops being reachable when the service goes away.
 * Needs root for `ip netns`.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EnvdProcess, isRoot, ROOT_REASON, startEnvdProcess } from "./envd-harness.js";

const ns = `wrenn-envd-fwd-${randomBytes(3).toString("hex")}`;
const address = "10.213.77.2";

function inNs(cmd: string, args: string[]): string {
  return execFileSync("ip", ["netns", "exec", ns, cmd, ...args], { timeout: 10_000 }).toString();
}

function probe(port: number): string {
  try {
    return inNs("socat", ["-T", "2", "-", `TCP4:${address}:${port},connect-timeout=2`]).trim();
  } catch {
    return "unreachable";
  }
}

describe.skipIf(!isRoot)(`envd port forwarder in a test network namespace (${isRoot ? "root" : ROOT_REASON})`, () => {
  let envd: EnvdProcess | undefined;
  let service: ChildProcess | undefined;
  const port = 20_000 + Math.floor(Math.random() * 20_000);

  beforeAll(async () => {
    execFileSync("ip", ["netns", "add", ns]);
    execFileSync("ip", ["-n", ns, "link", "set", "lo", "up"]);
    // The "guest address" lives on the namespace's own loopback: no interface is shared with the host.
    execFileSync("ip", ["-n", ns, "addr", "add", `${address}/32`, "dev", "lo"]);
    envd = await startEnvdProcess(["--forward-address", address], {
      command: ["ip", "netns", "exec", ns, process.execPath, "--import", "tsx", "agent/envd/main.ts"],
    });
  });

  afterAll(async () => {
    service?.kill("SIGKILL");
    await envd?.stop();
    // Anything still inside the namespace was started by this test (a straggling socat, say).
    try {
      for (const pid of execFileSync("ip", ["netns", "pids", ns]).toString().split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {
          // already gone
        }
      }
    } catch {
      // namespace never created
    }
    try {
      execFileSync("ip", ["netns", "del", ns]);
    } catch {
      // never created
    }
  });

  it("bridges a loopback-only listener to the forward address, and stops when it goes away", async () => {
    expect(probe(port)).toBe("unreachable");
    // A one-line TCP service on the namespace's loopback only.
    service = spawn(
      "ip",
      ["netns", "exec", ns, "socat", `TCP4-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, "SYSTEM:echo forwarded-ok"],
      {
        stdio: "ignore",
      },
    );
    await expect.poll(() => probe(port), { timeout: 15_000, interval: 500 }).toBe("forwarded-ok");
    expect(envd?.logs()).toContain('"msg":"forwarding port"');

    service.kill("SIGTERM");
    await expect.poll(() => probe(port), { timeout: 15_000, interval: 500 }).toBe("unreachable");
    await expect.poll(() => envd?.logs() ?? "", { timeout: 5_000 }).toContain('"msg":"stopped port forward"');
  });

  it("does not forward envd's own port", () => {
    expect(envd?.logs()).not.toContain(`"port":${envd?.port},"address":"${address}"`);
  });
});
