import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import {
  chmod,
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  truncate,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createExec } from "../../agent/exec.js";
import { filesLayout } from "../../agent/layout.js";
import { noopLogger } from "../../agent/logger.js";
import { processAlive } from "../../agent/process-identity.js";
import { QemuRuntimeError } from "../../agent/runtimes/qemu/errors.js";
import { guestUid, QEMU_FILES, QemuRuntime } from "../../agent/runtimes/qemu/runtime.js";
import type { GuestHandle, GuestSpec } from "../../agent/runtimes/types.js";

/**
 * The QEMU runtime on real TCG virtual machines, driven directly (no agent): start, freeze/thaw,
 * pause to disk and restore, bad snapshots, stop. The guest is the shared kernel with a tiny busybox
 * initramfs that counts on the serial console, so these tests need only the kernel and show exactly
 * whether guest execution stopped and resumed where it was. The network slot is a netns with a TAP
 * that this file creates and removes.
 */

const run = promisify(execFile);
const kernelPath = filesLayout("/var/lib/wrenn").kernelPath;
const isRoot = process.getuid?.() === 0;
const skipReason = !isRoot
  ? "needs root to create a network namespace and TAP device"
  : !existsSync(kernelPath)
    ? `needs the guest kernel at ${kernelPath} (npm run image -- build)`
    : undefined;

const netns = `wq${randomBytes(3).toString("hex")}`;
let root: string;
let baseImage: string;
let initrd: string;
const started: { spec: GuestSpec; handle: GuestHandle }[] = [];

/** A busybox initramfs whose init prints a counter to the console every 200 ms, forever. */
async function buildCounterInitramfs(dir: string): Promise<string> {
  const tree = join(dir, "initramfs");
  await mkdir(join(tree, "bin"), { recursive: true });
  await copyFile("/bin/busybox", join(tree, "bin", "busybox"));
  await writeFile(
    join(tree, "init"),
    [
      "#!/bin/busybox sh",
      "/bin/busybox --install -s /bin",
      "echo COUNTER_BOOTED",
      "i=0",
      'while true; do i=$((i+1)); echo "count $i"; sleep 0.2; done',
      "",
    ].join("\n"),
  );
  await chmod(join(tree, "init"), 0o755);
  const out = join(dir, "initramfs.cpio.gz");
  await run("sh", ["-c", `cd '${tree}' && find . | cpio -o -H newc --quiet | gzip -1 > '${out}'`]);
  return out;
}

function specFor(name: string): GuestSpec {
  return {
    sandboxId: `${name}${"0".repeat(20 - name.length)}`,
    template: "counter",
    vcpus: 1,
    memoryMb: 128,
    sandboxDir: join(root, "sandboxes", name),
    network: {
      netns,
      tapName: "tap0",
      guestIp: "169.254.0.21",
      gatewayIp: "169.254.0.22",
      prefixLength: 30,
      guestMac: "02:fc:00:00:00:01",
    },
    kernelPath,
    initrdPath: initrd,
    imageRootfsTree: "",
    imageRootfsExt4: baseImage,
  };
}

async function counts(spec: GuestSpec): Promise<number[]> {
  const text = await readFile(join(spec.sandboxDir, QEMU_FILES.console), "utf8").catch(() => "");
  return [...text.matchAll(/^count (\d+)/gm)].map((m) => Number(m[1]));
}

async function waitForCount(spec: GuestSpec, atLeast: number, timeoutMs = 60_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const seen = await counts(spec);
    if ((seen.at(-1) ?? 0) >= atLeast) return seen;
    if (Date.now() > deadline) throw new Error(`guest counter did not reach ${atLeast} (last: ${seen.at(-1)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const runtime = await QemuRuntime.create({ exec: createExec(noopLogger), logger: noopLogger });

async function startGuest(spec: GuestSpec): Promise<GuestHandle> {
  const handle = await runtime.start(spec);
  started.push({ spec, handle });
  return handle;
}

describe.skipIf(skipReason !== undefined)(
  `QEMU runtime on a real TCG VM${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    beforeAll(async () => {
      root = await mkdtemp(join(tmpdir(), "wrenn-qemu-vm-"));
      baseImage = join(root, "base.ext4");
      await run("truncate", ["-s", "16M", baseImage]);
      await run("mkfs.ext4", ["-q", "-F", baseImage]);
      initrd = await buildCounterInitramfs(root);
      await run("ip", ["netns", "add", netns]);
      await run("ip", ["-n", netns, "tuntap", "add", "tap0", "mode", "tap"]);
      await run("ip", ["-n", netns, "link", "set", "tap0", "up"]);
    });

    // A failed test must not leave its guest holding the netns's TAP for the next one.
    afterEach(async () => {
      for (const { spec, handle } of started.splice(0)) {
        await runtime.stop(spec, handle).catch(async () => {
          if (await processAlive(handle.pid, handle.pidStartTime)) process.kill(handle.pid, "SIGKILL");
        });
      }
    });

    afterAll(async () => {
      await run("ip", ["netns", "del", netns]).catch(() => undefined);
      if (root) await rm(root, { recursive: true, force: true });
    });

    it("starts a guest in the slot's netns, freezes and thaws it, and stops it leaving only logs", async () => {
      const spec = specFor("lifecycle");
      const handle = await startGuest(spec);
      expect(handle.runtime).toBe("qemu");
      expect(await runtime.isAlive(handle)).toBe(true);
      // QEMU itself (not `ip`) runs in the slot's network namespace.
      const [guestNs, slotNs] = await Promise.all([stat(`/proc/${handle.pid}/ns/net`), stat(`/run/netns/${netns}`)]);
      expect(guestNs.ino).toBe(slotNs.ino);
      // ...and not as root: it dropped to the sandbox's own uid after opening its devices, under seccomp.
      const status = await readFile(`/proc/${handle.pid}/status`, "utf8");
      expect(status).toMatch(new RegExp(`^Uid:\\s+${guestUid(spec.sandboxId)}\\s`, "m"));
      expect(status).toMatch(/^Seccomp:\s+2/m);
      await waitForCount(spec, 3);

      await runtime.freeze(spec, handle);
      const frozenAt = (await counts(spec)).at(-1) ?? 0;
      await new Promise((r) => setTimeout(r, 1000));
      expect((await counts(spec)).at(-1)).toBe(frozenAt);
      await runtime.thaw(spec, handle);
      await waitForCount(spec, frozenAt + 2, 10_000);

      await runtime.stop(spec, handle);
      expect(await runtime.isAlive(handle)).toBe(false);
      expect((await readdir(spec.sandboxDir)).sort()).toEqual([QEMU_FILES.console, QEMU_FILES.qemuLog].sort());
      // Idempotent.
      await runtime.stop(spec, handle);
    });

    it("pauses to disk and resumes where the guest left off, twice", async () => {
      const spec = specFor("pause");
      let handle = await startGuest(spec);
      const snapshotDir = join(root, "snapshots", "pause");
      let last = (await waitForCount(spec, 5)).at(-1) ?? 0;
      for (let round = 0; round < 2; round++) {
        const info = await runtime.snapshot(spec, handle, snapshotDir);
        expect(await runtime.isAlive(handle)).toBe(false);
        const sizes = Object.fromEntries(info.files.map((f) => [f.name, f.sizeBytes]));
        expect(sizes.memory).toBeGreaterThan(1_000_000);
        expect(sizes["disk.qcow2"]).toBeGreaterThan(0);
        expect(existsSync(join(spec.sandboxDir, QEMU_FILES.disk))).toBe(false);
        const beforePause = await counts(spec);
        last = beforePause.at(-1) ?? 0;
        await new Promise((r) => setTimeout(r, 1000));

        handle = await runtime.restore(spec, snapshotDir);
        started.push({ spec, handle });
        const after = await waitForCount(spec, last + 3, 20_000);
        // The counter carries on from its saved value: no reboot, nothing repeated or skipped.
        const resumed = after.slice(beforePause.length);
        expect(resumed[0]).toBe(last + 1);
        expect(resumed).toEqual(resumed.map((_, i) => last + 1 + i));
        const console = await readFile(join(spec.sandboxDir, QEMU_FILES.console), "utf8");
        expect(console.match(/COUNTER_BOOTED/g)).toHaveLength(1);
      }
      await runtime.stop(spec, handle);
      // The snapshot stays until the sandbox is destroyed (the manager removes it then).
      expect((await readdir(snapshotDir)).sort()).toEqual([
        "base.ext4",
        "disk.qcow2",
        "initramfs.cpio.gz",
        "memory",
        "qemu-snapshot.json",
        "vmlinux",
      ]);
    });

    it("refuses a missing or corrupt snapshot with a clear error and keeps the snapshot files", async () => {
      const spec = specFor("corrupt");
      const handle = await startGuest(spec);
      await waitForCount(spec, 2);
      const snapshotDir = join(root, "snapshots", "corrupt");
      await runtime.snapshot(spec, handle, snapshotDir);

      const missing = await runtime.restore(spec, join(root, "snapshots", "none")).catch((e: unknown) => e);
      expect(missing).toBeInstanceOf(QemuRuntimeError);
      expect((missing as QemuRuntimeError).reason).toBe("SNAPSHOT_MISSING");

      // Keep the valid header but cut the stream short: only QEMU itself can notice, while loading.
      const memory = join(snapshotDir, "memory");
      const fullSize = (await stat(memory)).size;
      await truncate(memory, Math.floor(fullSize / 3));
      const corrupt = await runtime.restore(spec, snapshotDir).catch((e: unknown) => e);
      expect(corrupt).toBeInstanceOf(QemuRuntimeError);
      expect((corrupt as QemuRuntimeError).reason, (corrupt as Error).message).toBe("SNAPSHOT_CORRUPT");
      expect((corrupt as Error).message).toMatch(/could not load the snapshot/);
      // Nothing left running, the snapshot's disk is untouched, and no half-made disk in the sandbox.
      expect(existsSync(join(snapshotDir, "disk.qcow2"))).toBe(true);
      expect(existsSync(join(spec.sandboxDir, QEMU_FILES.disk))).toBe(false);
      const { stdout } = await run("ps", ["-eo", "args"]);
      expect(stdout).not.toContain(join(spec.sandboxDir, QEMU_FILES.qmpSocket));
    });

    it("resumes after its template image version was removed, and refuses a swapped base", async () => {
      const versionDir = join(root, "image-versions", "v1");
      await mkdir(versionDir, { recursive: true });
      const spec = { ...specFor("rebuilt"), imageRootfsExt4: join(versionDir, "rootfs.ext4") };
      await copyFile(baseImage, spec.imageRootfsExt4);
      let handle = await startGuest(spec);
      await waitForCount(spec, 2);
      const snapshotDir = join(root, "snapshots", "rebuilt");
      await runtime.snapshot(spec, handle, snapshotDir);
      const last = (await counts(spec)).at(-1) ?? 0;
      // The image builder publishes a new version and deletes the old one while the sandbox is paused.
      await rm(versionDir, { recursive: true, force: true });
      handle = await runtime.restore(spec, snapshotDir);
      started.push({ spec, handle });
      await waitForCount(spec, last + 2, 20_000);
      await runtime.stop(spec, handle);

      // A base that is not the file the overlay was made on is refused, never silently used.
      const link = join(snapshotDir, "base.ext4");
      await copyFile(baseImage, `${link}.other`);
      await rename(`${link}.other`, link);
      const err = await runtime.restore(spec, snapshotDir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QemuRuntimeError);
      expect((err as QemuRuntimeError).reason).toBe("SNAPSHOT_INCOMPATIBLE");
      expect((err as Error).message).toMatch(/changed since the snapshot/);
    });

    it("fails a start with a missing kernel and leaves nothing behind", async () => {
      const spec = { ...specFor("nokernel"), kernelPath: join(root, "no-such-vmlinux") };
      const err = await runtime.start(spec).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QemuRuntimeError);
      expect((err as QemuRuntimeError).reason).toBe("KERNEL_MISSING");
      expect(existsSync(join(spec.sandboxDir, QEMU_FILES.disk))).toBe(false);
    });

    it("stops a QEMU whose handle was never recorded, found by its pidfile", async () => {
      const spec = specFor("stray");
      const handle = await startGuest(spec);
      await runtime.stop(spec, undefined);
      expect(await processAlive(handle.pid, handle.pidStartTime)).toBe(false);
      expect(existsSync(join(spec.sandboxDir, QEMU_FILES.disk))).toBe(false);
    });
  },
);
