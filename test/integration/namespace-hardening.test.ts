import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, realpath, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createExec } from "../../agent/exec.js";
import { filesLayout } from "../../agent/layout.js";
import { noopLogger } from "../../agent/logger.js";
import {
  cgroupDirs,
  createCgroups,
  detectCgroupLayout,
  killAndRemoveCgroups,
  type SandboxCgroups,
  sandboxCgroups,
} from "../../agent/runtimes/namespace/cgroups.js";
import { DiskPool } from "../../agent/runtimes/namespace/disks.js";
import { claimIdRange, type IdRange, releaseIdRange } from "../../agent/runtimes/namespace/id-ranges.js";
import { GUEST_CAPABILITIES, namespaceGuestCommand } from "../../agent/runtimes/namespace/launch.js";
import { IMAGES_ROOT, requireImage, requireRoot, TEMPLATE } from "../helpers/agent-fixtures.js";

/**
 * The namespace launcher by effect: guests started exactly as the agent starts them (same command
 * line, cgroups, disk image), whose first process is a probe script run as root of the sandbox. Every
 * probe is harmless even if the defence fails (values are written back, mounts are read-only, signals
 * are 0, loops are bounded), and the host side is checked too.
 */

const PIDS_MAX = 64;
const DISK_MB = 64;

describe("namespace runtime hardening (launcher, by effect)", () => {
  const netns = `wnsh-${randomBytes(4).toString("hex")}`;
  let work: string;
  let lower: string;
  let range: IdRange | undefined;
  let groups: SandboxCgroups | undefined;
  let netnsCreated = false;

  beforeAll(async () => {
    requireRoot();
    await requireImage();
    lower = await realpath(filesLayout(IMAGES_ROOT).imageRootfsTree(TEMPLATE));
    work = await mkdtemp(join(tmpdir(), "wrenn-nsharden-"));
    range = await claimIdRange(work);
    await execa("ip", ["netns", "add", netns]);
    netnsCreated = true;
    await execa("ip", ["-n", netns, "link", "set", "lo", "up"]);
    const layout = await detectCgroupLayout();
    groups = sandboxCgroups(layout, `wrenn-harden-${randomBytes(3).toString("hex")}`, "probe");
    await createCgroups(layout, groups, { memoryMb: 512, vcpus: 1, pidsMax: PIDS_MAX });
  });

  afterAll(async () => {
    if (groups) await killAndRemoveCgroups(groups);
    if (netnsCreated) await execa("ip", ["netns", "del", netns], { reject: false });
    if (range) await releaseIdRange(range);
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** Runs `script` as the first process of a fresh guest (root of the sandbox); its output and exit code. */
  async function guest(name: string, script: string, writable: "dirs" | "disk" = "dirs") {
    const dir = join(work, name);
    await mkdir(join(dir, "mounts"), { recursive: true });
    let target: { disk: string } | { upper: string; work: string };
    if (writable === "disk") {
      target = { disk: join(dir, "disk.ext4") };
      await new DiskPool({ exec: createExec(noopLogger), logger: noopLogger, dir }).format(target.disk, DISK_MB);
    } else {
      target = { upper: join(dir, "upper"), work: join(dir, "work") };
      await Promise.all([mkdir(target.upper), mkdir(target.work)]);
    }
    const [command, ...args] = namespaceGuestCommand({
      netns,
      lower,
      mountsDir: join(dir, "mounts"),
      writable: target,
      idBase: range?.base ?? -1,
      sandboxId: `probe-${name}`,
      cgroupDirs: groups ? cgroupDirs(groups) : [],
      dieWithParent: true,
      init: ["/bin/sh", "-c", script],
    });
    const result = await execa(command, args, { reject: false, all: true, timeout: 90_000 });
    return { dir, target, exitCode: result.exitCode, out: result.all ?? "" };
  }

  /** Lines "key=value" printed by a probe script. */
  function results(out: string): Record<string, string> {
    return Object.fromEntries(
      out
        .split("\n")
        .filter((l) => /^[a-z0-9_]+=/.test(l))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
  }

  it("makes root of the sandbox an unprivileged host uid with Docker's capabilities and the filter", async () => {
    const g = await guest(
      "identity",
      [
        'echo "uid=$(id -u)"',
        "echo \"map=$(tr -s ' ' < /proc/self/uid_map | sed 's/^ //')\"",
        "echo \"capeff=$(awk '/^CapEff/ {print $2}' /proc/self/status)\"",
        "echo \"capbnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)\"",
        "echo \"nnp=$(awk '/^NoNewPrivs/ {print $2}' /proc/self/status)\"",
        "echo \"seccomp=$(awk '/^Seccomp:/ {print $2}' /proc/self/status)\"",
        'echo "hostname=$(hostname)"',
        // Files root and user 1000 create belong to the guest's host range on the host.
        "touch /root-file && su user -c 'touch /home/user/user-file' && echo files=ok",
        // sudo: a setuid binary still makes the sandbox's user root of the sandbox (no no_new_privs).
        "echo \"sudo=$(su user -c 'sudo -n id -u' 2>/dev/null)\"",
      ].join("\n"),
    );
    const r = results(g.out);
    expect(r.uid, g.out).toBe("0");
    expect(r.map).toBe(`0 ${range?.base} 65536`);
    expect(range?.base).toBeGreaterThanOrEqual(0x70000000);
    const expected = Object.values(GUEST_CAPABILITIES).reduce((m, c) => m | (1n << BigInt(c)), 0n);
    expect(BigInt(`0x${r.capeff}`)).toBe(expected);
    expect(BigInt(`0x${r.capbnd}`)).toBe(expected);
    expect(r.nnp).toBe("0");
    expect(r.seccomp).toBe("2");
    expect(r.hostname).toBe("probe-identity");
    expect(r.files).toBe("ok");
    expect(r.sudo).toBe("0");
    const upper = "upper" in g.target ? g.target.upper : "";
    expect((await stat(join(upper, "root-file"))).uid).toBe(range?.base);
    expect((await stat(join(upper, "home/user/user-file"))).uid).toBe((range?.base ?? 0) + 1000);
  });

  it("refuses mounts, namespaces, devices, kernel interfaces and the host's processes and knobs", async () => {
    const corePattern = await readFile("/proc/sys/kernel/core_pattern", "utf8");
    const rootDev = await execa("stat", ["-c", "%Hd %Ld", "/"]);
    const [major, minor] = rootDev.stdout.trim().split(" ");
    const py = (code: string) => `python3 -c "import ctypes; l=ctypes.CDLL(None, use_errno=True); ${code}"`;
    const g = await guest(
      "escape",
      [
        "unshare -U true 2>/dev/null; echo unshare_user=$?",
        "unshare -m true 2>/dev/null; echo unshare_mount=$?",
        "mount -t tmpfs -o ro none /mnt 2>/dev/null; echo mount_tmpfs=$?",
        "mount -t proc -o ro proc /mnt 2>/dev/null; echo mount_proc=$?",
        // Writes back the value that is already there.
        "cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern 2>/dev/null; echo core_pattern=$?",
        "cat /proc/sys/kernel/hostname > /proc/sys/kernel/hostname 2>/dev/null; echo sysctl_hostname=$?",
        `mknod /tmp/hostdisk b ${major} ${minor} 2>/dev/null; echo mknod=$?`,
        'date -s "@$(date +%s)" >/dev/null 2>&1; echo set_clock=$?',
        `kill -0 ${process.pid} 2>/dev/null; echo signal_host=$?`,
        "echo procs=$(ls /proc | grep -c '^[0-9]')",
        "echo sys_mount=$(awk '$5 == \"/sys\" {print $6}' /proc/self/mountinfo | cut -d, -f1)",
        "echo proc_sys_mount=$(awk '$5 == \"/proc/sys\" {print $6}' /proc/self/mountinfo | cut -d, -f1)",
        "touch /sys/kernel/wrenn-probe 2>/dev/null; echo write_sys=$?",
        "echo firmware=$(ls /sys/firmware | wc -l)",
        "echo devices=$(ls /dev | tr '\\n' ' ')",
        // name_to_handle_at (303) / open_by_handle_at (304), bpf (321), keyctl (250), init_module (175).
        `${py("r=l.syscall(303, -100, b'/etc', None, None, 0); print('handle=%d/%d' % (r, ctypes.get_errno()))")}`,
        `${py("r=l.syscall(321, 0, 0, 0); print('bpf=%d/%d' % (r, ctypes.get_errno()))")}`,
        `${py("r=l.syscall(250, 0, 0, 0); print('keyctl=%d/%d' % (r, ctypes.get_errno()))")}`,
        `${py("r=l.syscall(175, 0, 0, b''); print('init_module=%d/%d' % (r, ctypes.get_errno()))")}`,
      ].join("\n"),
    );
    const r = results(g.out);
    for (const k of ["unshare_user", "unshare_mount", "mount_tmpfs", "mount_proc", "core_pattern"]) {
      expect(r[k], `${k}\n${g.out}`).not.toBe("0");
    }
    for (const k of ["sysctl_hostname", "mknod", "set_clock", "signal_host", "write_sys"]) {
      expect(r[k], `${k}\n${g.out}`).not.toBe("0");
    }
    expect(await readFile("/proc/sys/kernel/core_pattern", "utf8")).toBe(corePattern);
    expect(Number(r.procs)).toBeLessThan(10);
    expect(r.sys_mount).toBe("ro");
    expect(r.proc_sys_mount).toBe("ro");
    expect(r.firmware).toBe("0");
    expect(r.devices?.trim().split(" ").sort()).toEqual(
      [
        "fd",
        "full",
        "mqueue",
        "null",
        "ptmx",
        "pts",
        "random",
        "shm",
        "stderr",
        "stdin",
        "stdout",
        "tty",
        "urandom",
        "zero",
      ].sort(),
    );
    expect(r.handle).toBe("-1/1");
    expect(r.bpf).toBe("-1/1");
    expect(r.keyctl).toBe("-1/1");
    expect(r.init_module).toBe("-1/1");
  });

  it("keeps ordinary work working: bash, python, git, a server on :80, ptys", async () => {
    const g = await guest(
      "work",
      [
        "bash -c 'cat <(echo procsub) && echo bash=ok'",
        "python3 -c 'import json, subprocess, threading; print(\"python=ok\")'",
        "cd /tmp && git init -q r && cd r && git -c user.email=a@b -c user.name=n commit -q --allow-empty -m x && echo git=ok",
        "python3 -m http.server 80 --bind 127.0.0.1 >/dev/null 2>&1 & srv=$!",
        "for i in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:80/ && break; sleep 0.1; done",
        "curl -sf -o /dev/null http://127.0.0.1:80/ && echo port80=ok; kill $srv",
        "script -qc 'tty' /dev/null | grep -q /dev/pts/ && echo pty=ok",
        "su user -c 'python3 -m http.server 81 --bind 127.0.0.1' >/dev/null 2>&1 & usrv=$!",
        "for i in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:81/ && break; sleep 0.1; done",
        "curl -sf -o /dev/null http://127.0.0.1:81/ && echo user_port81=ok; kill $usrv",
      ].join("\n"),
    );
    const r = results(g.out);
    for (const k of ["bash", "python", "git", "port80", "pty", "user_port81"])
      expect(r[k], `${k}\n${g.out}`).toBe("ok");
  });

  it("stops a fork bomb at pids.max", async () => {
    // At most 200 processes that end by themselves within 5 s, even if the limit failed.
    const g = await guest(
      "forkbomb",
      [
        "python3 - <<'EOF'",
        "import os, time",
        "n, err = 0, ''",
        "for i in range(200):",
        "    try:",
        "        pid = os.fork()",
        "    except OSError as e:",
        "        err = e.strerror",
        "        break",
        "    if pid == 0:",
        "        time.sleep(5)",
        "        os._exit(0)",
        "    n += 1",
        "print('forked=%d' % n)",
        "print('error=%s' % err)",
        "EOF",
      ].join("\n"),
    );
    const r = results(g.out);
    // The shell and python are two of the sandbox's tasks.
    expect(Number(r.forked), `${g.exitCode}\n${g.out}`).toBeLessThanOrEqual(PIDS_MAX - 2);
    expect(Number(r.forked)).toBeGreaterThan(PIDS_MAX / 2);
    expect(r.error).toBe("Resource temporarily unavailable");
    const events = await readFile(join(groups?.pids ?? groups?.memory ?? "", "pids.events"), "utf8");
    expect(Number(/max (\d+)/.exec(events)?.[1])).toBeGreaterThan(0);
  });

  it("fills the sandbox's disk to ENOSPC while the host keeps its space", async () => {
    const before = await execa("df", ["--output=avail", "-k", work]);
    const g = await guest(
      "disk",
      [
        "echo size_kb=$(df -k / | awk 'NR==2 {print $2}')",
        `dd if=/dev/zero of=/fill bs=1M count=${DISK_MB * 3} 2>&1 | grep -q 'No space left' && echo enospc=yes`,
        "echo written_kb=$(du -k /fill | cut -f1)",
      ].join("\n"),
      "disk",
    );
    const r = results(g.out);
    expect(r.enospc, g.out).toBe("yes");
    expect(Number(r.size_kb)).toBeLessThanOrEqual(DISK_MB * 1024);
    expect(Number(r.written_kb)).toBeLessThan(DISK_MB * 1024);
    // The image holds at most its size on the host; the host's free space barely moved.
    const image = await stat(join(g.dir, "disk.ext4"));
    expect(image.blocks * 512).toBeLessThanOrEqual(DISK_MB * 2 ** 20);
    const after = await execa("df", ["--output=avail", "-k", work]);
    const usedKb = Number(before.stdout.split("\n")[1]) - Number(after.stdout.split("\n")[1]);
    expect(usedKb).toBeLessThan(DISK_MB * 1024 + 16 * 1024);
  });
});
