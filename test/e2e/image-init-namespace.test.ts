import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, realpath, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { filesLayout } from "../../agent/layout.js";
import { claimIdRange, type IdRange, releaseIdRange } from "../../agent/runtimes/namespace/id-ranges.js";
import { namespaceGuestCommand } from "../../agent/runtimes/namespace/launch.js";
import { loadImageBuilderConfig } from "../../rootfs/config.js";

// Needs root: network namespace, the namespace launcher (user, mount, pid namespaces). CI runs as root.
const isRoot = process.getuid?.() === 0;
const config = loadImageBuilderConfig();

interface Proc {
  pid: number;
  ppid: number;
  args: string;
}

async function processTable(): Promise<Proc[]> {
  const out: Proc[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const args = (await readFile(`/proc/${entry}/cmdline`, "utf8")).split("\0").join(" ").trim();
      out.push({ pid: Number(entry), ppid, args });
    } catch {
      // The process exited while we looked.
    }
  }
  return out;
}

function descendants(table: Proc[], root: number): Proc[] {
  const found: Proc[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    for (const p of table.filter((x) => x.ppid === pid)) {
      found.push(p);
      queue.push(p.pid);
    }
  }
  return found;
}

describe.skipIf(!isRoot)(
  "wrenn-init as the first process of the namespace runtime (needs root: overlay, netns, bwrap)",
  () => {
    const netns = `wini-${randomBytes(4).toString("hex")}`;
    let work: string;
    let merged: string;
    let upper: string;
    let lowerHostsBefore: string;
    let sandbox: ResultPromise | undefined;
    let range: IdRange | undefined;
    let netnsCreated = false;
    let log = "";

    beforeAll(async () => {
      const lower = await realpath(filesLayout(config.rootDir).imageRootfsTree("minimal"));
      lowerHostsBefore = await readFile(join(lower, "etc/hosts"), "utf8");
      work = await mkdtemp(join(tmpdir(), "wrenn-initns-"));
      upper = join(work, "upper");
      merged = join(work, "merged");
      for (const d of [upper, join(work, "work"), merged]) await mkdir(d);
      range = await claimIdRange(work);
      await execa("ip", ["netns", "add", netns]);
      netnsCreated = true;
      // A veth (both ends inside the netns) with an address stands in for the agent's: wrenn-init must leave it alone.
      await execa("ip", ["-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer"]);
      await execa("ip", ["-n", netns, "addr", "add", "10.254.77.2/30", "dev", "eth0"]);
      await execa("ip", ["-n", netns, "link", "set", "eth0", "up"]);
      const [command, ...args] = namespaceGuestCommand({
        netns,
        lower,
        mountsDir: merged,
        writable: { upper, work: join(work, "work") },
        idBase: range.base,
        sandboxId: "sbx-test",
        dieWithParent: true,
      });
      sandbox = execa(command, args, { reject: false, all: true, buffer: true });
      sandbox.all?.on("data", (chunk: Buffer) => {
        log += chunk.toString();
      });
      const deadline = Date.now() + 30_000;
      while (!/exec tini/.test(log)) {
        if (Date.now() > deadline) throw new Error(`wrenn-init did not reach exec tini:\n${log}`);
        if (sandbox.exitCode !== undefined && sandbox.exitCode !== null) throw new Error(`sandbox exited:\n${log}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      // Give tini a moment to start envd.
      await new Promise((r) => setTimeout(r, 500));
    });

    afterAll(async () => {
      if (sandbox?.pid) {
        // Killing the namespace's init (bwrap's child) takes everything inside with it.
        const table = await processTable();
        for (const p of descendants(table, sandbox.pid).reverse()) {
          try {
            process.kill(p.pid, "SIGKILL");
          } catch {
            // Already gone.
          }
        }
        try {
          process.kill(sandbox.pid, "SIGKILL");
        } catch {
          // Already gone.
        }
        await sandbox.catch(() => undefined);
      }
      if (netnsCreated) await execa("ip", ["netns", "del", netns], { reject: false });
      if (range) await releaseIdRange(range);
      if (work) await rm(work, { recursive: true, force: true });
    });

    it("detects the namespace mode and logs what it skips and why", () => {
      expect(log).toMatch(/wrenn-init: \[[\d.]+s\] starting \(mode namespace/);
      expect(log).toMatch(/chrony: not started: the namespace runtime shares the host's kernel clock/);
      expect(log).toMatch(/cgroup2: not mounted/);
      expect(log).toMatch(/network: eth0 already configured/);
      // The launcher set the hostname; wrenn-init keeps it.
      expect(log).not.toMatch(/hostname: /);
    });

    it("runs tini as the pid namespace's init (pid 1, the reaper) with envd as its child", async () => {
      const table = await processTable();
      const inside = descendants(table, sandbox?.pid ?? -1);
      const tini = inside.find((p) => p.args.startsWith("/sbin/tini"));
      expect(tini, JSON.stringify(inside)).toBeDefined();
      expect(tini?.args).toMatch(/^\/sbin\/tini -- \/usr\/local\/bin\/envd/);
      // NSpid: its pid on the host, then in the sandbox's pid namespace, where it is 1.
      const status = await readFile(`/proc/${tini?.pid}/status`, "utf8");
      expect(status).toMatch(/^NSpid:\s+\d+\s+1$/m);
      const envd = inside.find((p) => p.ppid === tini?.pid);
      expect(envd, JSON.stringify(inside)).toBeDefined();
      // No chronyd may run in a namespace sandbox: it would steer the host's clock.
      expect(inside.some((p) => /chronyd/.test(p.args))).toBe(false);
    });

    it("writes only to the sandbox's upper layer", async () => {
      expect(await readFile(join(upper, "etc/hosts"), "utf8")).toMatch(/^127\.0\.1\.1 sbx-test$/m);
      expect(await readFile(join(upper, "etc/resolv.conf"), "utf8")).toMatch(/^nameserver /m);
      const lower = await realpath(filesLayout(config.rootDir).imageRootfsTree("minimal"));
      expect(await readFile(join(lower, "etc/hosts"), "utf8")).toBe(lowerHostsBefore);
    });

    it("has sysfs read-only inside the sandbox", async () => {
      const table = await processTable();
      const tini = descendants(table, sandbox?.pid ?? -1).find((p) => p.args.startsWith("/sbin/tini"));
      const mounts = await readFile(`/proc/${tini?.pid}/mounts`, "utf8");
      // The runtime binds the netns's sysfs read-only (its source is named after the netns); either way
      // a sandbox must not write host-wide kernel knobs through it.
      expect(mounts).toMatch(/^\S+ \/sys sysfs ro[,\s]/m);
      expect(mounts).not.toMatch(/^\S+ \/sys sysfs rw[,\s]/m);
    });
  },
);
