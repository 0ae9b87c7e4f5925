import { access, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { beforeAll, describe, expect, it } from "vitest";
import { createExec } from "../../agent/exec.js";
import { noopLogger } from "../../agent/logger.js";
import { probeKvm } from "../../agent/runtimes/qemu/runtime.js";
import { IsolationClass, Runtime, SandboxState, StopReason } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import {
  IMAGES_ROOT,
  leftovers,
  newSandboxId,
  readState,
  requireImage,
  requireRoot,
  TEMPLATE,
  text,
} from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { cleanUpSuiteAgent, codeOf, startSuiteAgent } from "../helpers/agent-suite.js";

/**
 * Issue 14, the gVisor runtime against a real agent and real runsc sandboxes: a guest runs on gVisor's
 * kernel with the agent's cgroups and slot, pauses and resumes in place, survives `kill -9` of the
 * agent and is re-adopted, and a destroy leaves no runsc process, mount, cgroup or state behind.
 */

interface GvisorState {
  handle?: {
    pid: number;
    data: {
      stateDir?: string;
      netns?: string;
      merged?: string;
      diskMount?: string;
      cgroups?: Record<string, string | undefined>;
    };
  };
}

const alive = (pid: number) =>
  readFile(`/proc/${pid}/stat`, "utf8").then(
    (stat) => !/\) [ZX] /.test(stat),
    () => false,
  );

/** Every process in a sandbox's cgroups (the runsc sandbox, its ptrace stubs and the gofer). */
async function cgroupProcs(groups: Record<string, string | undefined>): Promise<number[]> {
  const pids = new Set<number>();
  for (const dir of Object.values(groups)) {
    if (dir === undefined) continue;
    const text = await readFile(join(dir, "cgroup.procs"), "utf8").catch(() => "");
    for (const line of text.split("\n")) if (line !== "") pids.add(Number(line));
  }
  return [...pids];
}

const cmdline = (pid: number) => readFile(`/proc/${pid}/cmdline`, "utf8").then((t) => t.split("\0").join(" "));

describe("agent: gVisor runtime", () => {
  let agent: AgentProcess;

  beforeAll(async () => {
    agent = await startSuiteAgent({ runtime: "gvisor", rootDir: IMAGES_ROOT });
  });
  cleanUpSuiteAgent(() => agent);

  it("runs a guest on gVisor's kernel, in the agent's cgroups, and leaves nothing after destroy", async () => {
    const c = agent.client;
    const info = await c.getHostInfo({});
    expect(info.runtime).toBe(Runtime.GVISOR);
    expect(info.isolation).toBe(IsolationClass.GVISOR);
    expect(info.availableRuntimes).toContain(Runtime.GVISOR);
    expect(info.pauseToDisk).toBe(false);

    const id = newSandboxId();
    await c.createSandbox({ sandboxId: id, template: TEMPLATE, memoryMb: 256, vcpus: 1 });
    const state = (await readState(agent, id)) as GvisorState;
    const handle = state.handle;
    if (handle?.data.cgroups === undefined) throw new Error("no gvisor handle in state.json");
    // The handle's process is runsc's sandbox (the Sentry), and it lives in the sandbox's cgroups with the gofer.
    expect(await cmdline(handle.pid)).toMatch(/^runsc-sandbox .*--network=host.* boot /);
    const procs = await cgroupProcs(handle.data.cgroups);
    expect(procs).toContain(handle.pid);
    const names = await Promise.all(procs.map((p) => cmdline(p).catch(() => "")));
    expect(names.some((n) => n.startsWith("runsc-gofer "))).toBe(true);
    const memory = handle.data.cgroups.memory ?? "";
    const limit = memory.includes("/sys/fs/cgroup/memory/") ? "memory.limit_in_bytes" : "memory.max";
    expect((await readFile(join(memory, limit), "utf8")).trim()).toBe(String(256 * 2 ** 20));

    // gVisor's kernel answers, not the host's: its own release, and root inside has a small capability set.
    const uname = await c.exec({ sandboxId: id, cmd: "uname", args: ["-r"] });
    expect(text(uname.stdout).trim()).toBe("4.4.0");
    const caps = await c.exec({ sandboxId: id, cmd: "grep", args: ["CapEff", "/proc/self/status"], user: "root" });
    const capEff = BigInt(`0x${text(caps.stdout).split(/\s+/)[1]}`);
    const CAP_SYS_ADMIN = 1n << 21n;
    expect(capEff & CAP_SYS_ADMIN).toBe(0n);
    expect(text((await c.exec({ sandboxId: id, cmd: "hostname" })).stdout).trim()).toBe(id);
    expect(text((await c.exec({ sandboxId: id, cmd: "id", args: ["-un"] })).stdout).trim()).toBe("user");
    const root = await c.exec({ sandboxId: id, cmd: "id", args: ["-u"], user: "root" });
    expect(text(root.stdout).trim()).toBe("0");
    // This gVisor ignores set-user-ID bits; sudo works through the guest tools' root daemon, which runs
    // the real sudo for the caller, so /etc/sudoers decides (the sandbox's user may do anything).
    const sudo = await c.exec({ sandboxId: id, cmd: "sudo", args: ["-n", "id", "-u"] });
    expect(text(sudo.stderr)).toBe("");
    expect(text(sudo.stdout)).toBe("0\n");
    expect(sudo.exitCode).toBe(0);
    const sudoEnv = await c.exec({
      sandboxId: id,
      cmd: "/bin/bash",
      args: ["-c", "cd /tmp && echo piped | sudo -n sh -c 'echo \"$SUDO_USER $(pwd) $(cat)\"; exit 7'"],
    });
    expect(text(sudoEnv.stdout)).toBe("user /tmp piped\n");
    expect(sudoEnv.exitCode).toBe(7);
    // Root through sudo is root of gVisor's kernel only: no CAP_SYS_ADMIN, core_pattern stays read-only
    // (the value already there is written back, so nothing changes even if the write went through).
    const hostCorePattern = await readFile("/proc/sys/kernel/core_pattern", "utf8");
    const sudoRoot = await c.exec({
      sandboxId: id,
      cmd: "/bin/bash",
      args: [
        "-c",
        "sudo -n sh -c 'grep CapEff /proc/self/status; cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern && echo WROTE'",
      ],
    });
    const sudoCapEff = BigInt(`0x${text(sudoRoot.stdout).split(/\s+/)[1]}`);
    expect(sudoCapEff & CAP_SYS_ADMIN).toBe(0n);
    expect(text(sudoRoot.stdout)).not.toContain("WROTE");
    expect(await readFile("/proc/sys/kernel/core_pattern", "utf8")).toBe(hostCorePattern);
    // sudoers still decides: an account it does not name gets no root.
    await c.exec({ sandboxId: id, cmd: "useradd", args: ["-m", "stranger"], user: "root" });
    const refused = await c.exec({ sandboxId: id, cmd: "sudo", args: ["-n", "id", "-u"], user: "stranger" });
    expect(refused.exitCode).not.toBe(0);
    expect(text(refused.stdout)).toBe("");
    // coreutils' statx calls work through the agent's shim (this runsc rejects AT_NO_AUTOMOUNT).
    const ls = await c.exec({
      sandboxId: id,
      cmd: "/bin/bash",
      args: ["-c", "ls -l /usr/bin/sudo && stat -c %a /etc"],
    });
    expect(text(ls.stderr)).toBe("");
    expect(text(ls.stdout)).toMatch(/^-rwsr-xr-x .* \/usr\/bin\/sudo\n755\n$/);

    // Files go through gVisor's gofer to the overlay's upper layer on the host.
    const content = new TextEncoder().encode("through the gofer\n");
    await c.writeFile({ sandboxId: id, path: "/home/user/g.txt", content });
    expect(text((await c.readFile({ sandboxId: id, path: "/home/user/g.txt" })).content)).toBe("through the gofer\n");
    const upper = join(handle.data.diskMount ?? "", "upper", "home", "user", "g.txt");
    expect(await readFile(upper, "utf8")).toBe("through the gofer\n");
    const cat = await c.exec({ sandboxId: id, cmd: "cat", args: ["/home/user/g.txt"] });
    expect(text(cat.stdout)).toBe("through the gofer\n");
    // The writable layer is a 4 GiB ext4 image: a bigger file fails inside, the host keeps its space.
    const fill = await c.exec({
      sandboxId: id,
      cmd: "/bin/bash",
      args: ["-c", "fallocate -l 5G /home/user/fill; rc=$?; rm -f /home/user/fill; exit $rc"],
    });
    expect(fill.exitCode).not.toBe(0);
    expect(text(fill.stderr)).toMatch(/No space left on device/);
    expect(await readFile("/proc/self/mountinfo", "utf8")).toContain(` ${handle.data.diskMount} `);

    // Pause freezes in place: the guest's processes keep their state and run on after resume.
    await c.exec({ sandboxId: id, cmd: "/bin/sh", args: ["-c", "sleep 600 >/dev/null 2>&1 &"] });
    const before = text((await c.exec({ sandboxId: id, cmd: "pgrep", args: ["-x", "sleep"] })).stdout).trim();
    expect(before).toMatch(/^[0-9]+$/);
    await c.pauseSandbox({ sandboxId: id });
    expect((await c.getSandbox({ sandboxId: id })).sandbox?.state).toBe(SandboxState.PAUSED);
    expect(await codeOf(c.exec({ sandboxId: id, cmd: "true" }))).toBe(Code.FailedPrecondition);
    await c.resumeSandbox({ sandboxId: id });
    const after = text((await c.exec({ sandboxId: id, cmd: "pgrep", args: ["-x", "sleep"] })).stdout).trim();
    expect(after).toBe(before);

    await c.destroySandbox({ sandboxId: id });
    expect(await leftovers(agent, procs)).toEqual([]);
    expect(await alive(handle.pid)).toBe(false);
  });

  it("ends the whole sandbox, not the host, when the guest outgrows its memory limit", async () => {
    // gVisor holds all guest memory in one host process (the Sentry), so the host's OOM killer ends the
    // sandbox; a VM or the namespace runtime would kill only the process. The agent reports it as lost.
    const c = agent.client;
    const id = newSandboxId();
    await c.createSandbox({ sandboxId: id, template: TEMPLATE, memoryMb: 128, vcpus: 1 });
    const hog = c.exec({
      sandboxId: id,
      cmd: "python3",
      args: ["-c", "a = bytearray(400 * 1024 * 1024); a[::4096] = b'x' * len(a[::4096]); print('survived')"],
    });
    const outcome = await hog.then(
      (r) => text(r.stdout),
      (err: unknown) => String(err),
    );
    expect(outcome).not.toContain("survived");
    const started = performance.now();
    expect((await fetch(`${agent.url}/health`)).status).toBe(200);
    expect(performance.now() - started).toBeLessThan(1_000);
    const deadline = Date.now() + 15_000;
    let sandbox = (await c.getSandbox({ sandboxId: id })).sandbox;
    while (sandbox?.state !== SandboxState.STOPPED && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      sandbox = (await c.getSandbox({ sandboxId: id })).sandbox;
    }
    expect(sandbox?.state).toBe(SandboxState.STOPPED);
    expect(sandbox?.stopReason).toBe(StopReason.LOST);
    expect(await leftovers(agent)).toEqual([]);
  });
});

describe("agent: gVisor restart recovery", () => {
  it("keeps gVisor sandboxes running through kill -9 of the agent and re-adopts them", async () => {
    requireRoot();
    await requireImage();
    const first = await startAgentProcess({ runtime: "gvisor", rootDir: IMAGES_ROOT });
    let second: AgentProcess | undefined;
    try {
      const ids = [newSandboxId(), newSandboxId()];
      await Promise.all(ids.map((sandboxId) => first.client.createSandbox({ sandboxId, template: TEMPLATE })));
      const marker = new TextEncoder().encode("written before the crash\n");
      await first.client.writeFile({ sandboxId: ids[0] ?? "", path: "/home/user/marker", content: marker });
      const handles = await Promise.all(ids.map(async (id) => ((await readState(first, id)) as GvisorState).handle));
      const pids = handles.map((h) => h?.pid ?? 0);
      const procs = (await Promise.all(handles.map((h) => cgroupProcs(h?.data.cgroups ?? {})))).flat();

      first.kill9();
      await new Promise((r) => setTimeout(r, 500));
      for (const pid of pids) expect(await alive(pid)).toBe(true);

      second = await startAgentProcess({ ...first.restartOptions });
      const listed = await second.client.listSandboxes({});
      expect(
        listed.sandboxes
          .filter((s) => s.state === SandboxState.RUNNING)
          .map((s) => s.sandboxId)
          .sort(),
      ).toEqual([...ids].sort());
      const c = second.client;
      const read = await c.readFile({ sandboxId: ids[0] ?? "", path: "/home/user/marker" });
      expect(text(read.content)).toBe("written before the crash\n");
      const names = await Promise.all(ids.map((sandboxId) => c.exec({ sandboxId, cmd: "hostname" })));
      expect(names.map((n) => text(n.stdout).trim())).toEqual(ids);
      // The re-adopted guest still pauses and resumes through its recorded cgroups.
      await c.pauseSandbox({ sandboxId: ids[1] ?? "" });
      await c.resumeSandbox({ sandboxId: ids[1] ?? "" });
      expect(text((await c.exec({ sandboxId: ids[1] ?? "", cmd: "echo", args: ["ok"] })).stdout)).toBe("ok\n");

      await Promise.all(ids.map((sandboxId) => c.destroySandbox({ sandboxId })));
      expect(await leftovers(second, procs)).toEqual([]);
      // runsc's state directories went with the sandboxes.
      for (const h of handles) {
        const stateDir = h?.data.stateDir ?? "";
        expect(
          await access(stateDir).then(
            () => true,
            () => false,
          ),
        ).toBe(false);
      }
      expect(await readdir(join(second.stateDir, "sandboxes"))).toEqual([]);
    } finally {
      if (second) await second.stop();
      else await first.stop();
      await rm(first.stateDir, { recursive: true, force: true });
    }
  });

  it("auto picks gVisor on a host without KVM", async () => {
    requireRoot();
    // Usable KVM, not just the device: on PVM hosts /dev/kvm exists but QEMU cannot start a guest with it.
    const kvm = await probeKvm(createExec(noopLogger));
    const agent = await startAgentProcess({ runtime: "qemu", rootDir: IMAGES_ROOT, env: { AGENT_RUNTIME: "auto" } });
    try {
      const info = await agent.client.getHostInfo({});
      if (kvm) expect([Runtime.FIRECRACKER, Runtime.QEMU]).toContain(info.runtime);
      else expect(info.runtime).toBe(Runtime.GVISOR);
      expect(info.runtime).not.toBe(Runtime.NAMESPACE);
    } finally {
      await agent.stop();
    }
  });
});
