/**
 * The port forwarder, end to end, inside a network namespace this test creates (never the host's
 * interfaces): envd runs in the namespace with `--forward-address` set to a second address on the
 * namespace's loopback, a service listens on the namespace's 127.0.0.1, and the test checks the service
 * becomes reachable on that address, and stops being reachable when the service goes away.
 * Needs root for `ip netns`.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Sandbox } from "e2b";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type EnvdProcess,
  ensureTestUser,
  isRoot,
  ROOT_REASON,
  startEnvdProcess,
  tempRoot,
} from "../helpers/envd-harness.js";

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

describe.skipIf(!isRoot)(
  `envd in guest mode inside a test network namespace (${isRoot ? "root" : ROOT_REASON})`,
  () => {
    const gns = `wrenn-envd-g-${randomBytes(3).toString("hex")}`;
    const tmp = tempRoot("guest");
    let envd: EnvdProcess | undefined;
    const bridges: ChildProcess[] = [];
    let removeUser: () => void = () => {};
    let hostPort = 0;

    beforeAll(async () => {
      removeUser = ensureTestUser();
      execFileSync("ip", ["netns", "add", gns]);
      execFileSync("ip", ["-n", gns, "link", "set", "lo", "up"]);
      // No --debug: the namespace has no eth0 (so no forwarding) and nobody sends /init (so no clock step).
      envd = await startEnvdProcess([], {
        debug: false,
        command: ["ip", "netns", "exec", gns, process.execPath, "--import", "tsx", "agent/envd/main.ts"],
      });
      // Reach it through a unix socket on the shared filesystem: loopback only, on both sides.
      const sock = join(tmp.dir, "envd.sock");
      bridges.push(
        spawn("ip", ["netns", "exec", gns, "socat", `UNIX-LISTEN:${sock},fork`, `TCP4:127.0.0.1:${envd.port}`], {
          stdio: "ignore",
        }),
      );
      hostPort = 20_000 + Math.floor(Math.random() * 20_000);
      bridges.push(
        spawn("socat", [`TCP4-LISTEN:${hostPort},bind=127.0.0.1,reuseaddr,fork`, `UNIX-CONNECT:${sock}`], {
          stdio: "ignore",
        }),
      );
      const deadline = Date.now() + 15_000;
      while ((await fetch(`http://127.0.0.1:${hostPort}/health`).catch(() => undefined))?.status !== 204) {
        if (Date.now() > deadline) throw new Error("envd in the namespace did not answer through the bridge");
        await new Promise((r) => setTimeout(r, 200));
      }
    });

    afterAll(async () => {
      for (const b of bridges) b.kill("SIGKILL");
      await envd?.stop();
      try {
        for (const pid of execFileSync("ip", ["netns", "pids", gns]).toString().split(/\s+/).filter(Boolean)) {
          try {
            process.kill(Number(pid), "SIGKILL");
          } catch {
            // already gone
          }
        }
        execFileSync("ip", ["netns", "del", gns]);
      } catch {
        // never created
      }
      tmp.remove();
      removeUser();
    });

    // Lowering an oom_score_adj needs CAP_SYS_RESOURCE, which a guest's root has but some CI containers lack.
    const capEff = /CapEff:\s*([0-9a-f]+)/.exec(readFileSync("/proc/self/status", "utf8"))?.[1] ?? "0";
    const canLowerOom = ((BigInt(`0x${capEff}`) >> 24n) & 1n) === 1n;

    it.skipIf(!canLowerOom)("shields envd itself from the OOM killer (needs CAP_SYS_RESOURCE)", () => {
      const ipPid = envd?.child.pid ?? 0;
      // `ip netns exec` may fork; envd is then its child.
      const children = readFileSync(`/proc/${ipPid}/task/${ipPid}/children`, "utf8").trim();
      const envdPid = children === "" ? ipPid : Number(children.split(" ")[0]);
      expect(readFileSync(`/proc/${envdPid}/oom_score_adj`, "utf8").trim()).toBe("-900");
    });

    it("starts processes with the default OOM weight, as the default user", async () => {
      const sbx = new Sandbox({
        sandboxId: "guestmode",
        envdVersion: "0.6.13",
        debug: true,
        sandboxUrl: `http://127.0.0.1:${hostPort}`,
      });
      const r = await sbx.commands.run("cat /proc/self/oom_score_adj; id -un");
      expect(r.stdout).toBe("0\nuser\n");
    });
  },
);
