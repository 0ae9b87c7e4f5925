import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Process } from "../../proto/gen/envd/process/process_pb.js";
import { loadImageBuilderConfig } from "../../rootfs/config.js";
import { type BootedGuest, bootGuest } from "../../rootfs/verify.js";

// Booting needs root: it creates a network namespace and a TAP, and QEMU opens them. CI runs as root.
const isRoot = process.getuid?.() === 0;
const config = loadImageBuilderConfig();

const STANDARD_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

interface Ran {
  stdout: string;
  stderr: string;
  exitCode: number;
}

describe.skipIf(!isRoot)(
  "the minimal image boots under QEMU and serves envd over the TAP (needs root: netns, TAP)",
  () => {
    let guest: BootedGuest;
    let client: ReturnType<typeof createClient<typeof Process>>;

    /** Runs a program in the guest through envd's Process.Start and collects its output. */
    async function exec(cmd: string, args: string[], user = "user"): Promise<Ran> {
      const out: Ran = { stdout: "", stderr: "", exitCode: -1 };
      const stream = client.start(
        { process: { cmd, args, envs: {} } },
        // envd picks the user from Basic auth with an empty password, as E2B's SDKs send it.
        { headers: { authorization: `Basic ${Buffer.from(`${user}:`).toString("base64")}` }, timeoutMs: 60_000 },
      );
      for await (const res of stream) {
        const event = res.event?.event;
        if (event?.case === "data") {
          const output = event.value.output;
          if (output.case === "stdout") out.stdout += Buffer.from(output.value).toString();
          if (output.case === "stderr") out.stderr += Buffer.from(output.value).toString();
        } else if (event?.case === "end") {
          out.exitCode = event.value.exitCode;
        }
      }
      return out;
    }
    const sh = (script: string, user = "user") => exec("/bin/sh", ["-c", script], user);

    beforeAll(async () => {
      guest = await bootGuest({ rootDir: config.rootDir });
      const transport = createConnectTransport({
        baseUrl: "http://envd.guest",
        httpVersion: "1.1",
        nodeOptions: { socketPath: guest.envdSocketPath },
      });
      client = createClient(Process, transport);
    });

    afterAll(async () => {
      await guest?.stop();
    });

    it("answers /health over the TAP", async () => {
      const res = await guest.http("GET", "/health");
      expect(res.status).toBeGreaterThanOrEqual(200);
      expect(res.status).toBeLessThan(300);
    });

    it("runs tini as PID 1 with envd as its child", async () => {
      const comm = await sh("cat /proc/1/comm");
      expect(comm.stdout.trim()).toBe("tini");
      const ps = await sh("ps -eo pid=,ppid=,args=");
      const envdLines = ps.stdout.split("\n").filter((l) => l.includes("/opt/wrenn/envd"));
      expect(envdLines.length, ps.stdout).toBeGreaterThan(0);
      // The envd process whose parent is PID 1 (tini).
      expect(
        envdLines.some((l) => l.trim().split(/\s+/)[1] === "1"),
        ps.stdout,
      ).toBe(true);
    });

    it("gives spawned processes the standard PATH", async () => {
      const env = await exec("/usr/bin/env", []);
      const path = /^PATH=(.*)$/m.exec(env.stdout)?.[1] ?? "";
      const dirs = path.split(":");
      for (const dir of STANDARD_PATH) expect(dirs, path).toContain(dir);
      const which = await sh("for c in python3 git curl socat sudo ip; do command -v $c; done");
      expect(which.stdout.trim().split("\n")).toHaveLength(6);
    });

    it("reaps an orphaned process once it exits (no zombies)", async () => {
      // The shell exits at once; its background sleep is orphaned. When we then kill it, it becomes a
      // zombie that only its new parent (tini, PID 1) can reap.
      const started = await sh("sleep 300 >/dev/null 2>&1 & echo $!");
      const pid = started.stdout.trim();
      expect(pid).toMatch(/^\d+$/);
      const parent = await sh(`awk '/^PPid:/ {print $2}' /proc/${pid}/status`);
      expect(parent.stdout.trim(), "the orphan is reparented to PID 1 (tini)").toBe("1");
      await sh(`kill ${pid}`);
      let state = "";
      for (let i = 0; i < 50; i++) {
        state = (
          await sh(`if [ -e /proc/${pid} ]; then awk '/^State:/ {print $2}' /proc/${pid}/status; else echo gone; fi`)
        ).stdout.trim();
        if (state === "gone") break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(state).toBe("gone");
      const zombies = await sh("ps -eo stat=,pid=,comm= | awk '$1 ~ /^Z/'");
      expect(zombies.stdout.trim()).toBe("");
    });

    it("gives processes a working pseudo-terminal (devpts mounted by wrenn-init)", async () => {
      let output = "";
      const stream = client.start(
        { process: { cmd: "/usr/bin/tty", args: [], envs: {} }, pty: { size: { cols: 80, rows: 24 } } },
        { headers: { authorization: `Basic ${Buffer.from("user:").toString("base64")}` }, timeoutMs: 60_000 },
      );
      for await (const res of stream) {
        const event = res.event?.event;
        if (event?.case === "data" && event.value.output.case === "pty")
          output += Buffer.from(event.value.output.value).toString();
      }
      expect(output.trim()).toMatch(/^\/dev\/pts\/\d+$/);
    });

    it("logs whether chrony runs and why", async () => {
      const log = await guest.consoleLog();
      const chrony = log.split("\n").find((l) => /^wrenn-init: \[[\d.]+s\] chrony: /.test(l.trim()));
      expect(chrony, log).toBeDefined();
      if (guest.kvm) expect(chrony).toMatch(/chrony: running \(refclock PHC \/dev\/ptp0/);
      else expect(chrony).toMatch(/chrony: not started: \/dev\/ptp0 absent/);
      const running = await sh("pgrep -x chronyd >/dev/null && echo running || echo stopped");
      expect(running.stdout.trim()).toBe(guest.kvm ? "running" : "stopped");
    });

    it("configures the guest: hostname, eth0 from ip=, resolv.conf, passwordless sudo", async () => {
      expect((await sh("hostname")).stdout.trim()).toBe("sandbox");
      expect((await sh("ip -4 -o addr show dev eth0")).stdout).toMatch(/inet 169\.254\.0\.21\/30/);
      expect((await sh("ip route show default")).stdout).toMatch(/default via 169\.254\.0\.22 dev eth0/);
      expect((await sh("cat /etc/resolv.conf")).stdout).toMatch(/^nameserver /m);
      const sudo = await sh("sudo -n id -u");
      expect(sudo.exitCode, sudo.stderr).toBe(0);
      expect(sudo.stdout.trim()).toBe("0");
      expect((await sh("id -u")).stdout.trim()).toBe("1000");
      expect((await sh("mount")).stdout).toMatch(/cgroup2 on \/sys\/fs\/cgroup type cgroup2/);
    });
  },
);
