import { chown, mkdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../../logger.js";
import { waitForExit } from "../../process-identity.js";
import type { GuestHandle, GuestSpec, SnapshotInfo } from "../types.js";
import { copyFileAtomic, linkOrCopy, linkOrReference, moveFile, writeFileAtomic } from "../vm-files.js";
import { migrateToFileUri } from "./cmdline.js";
import { QemuRuntimeError } from "./errors.js";
import {
  fileIdentity,
  guestUid,
  PARTIAL_MEMORY,
  QEMU_FILES,
  removeGuestFiles,
  requireFile,
  SNAPSHOT_LINKS,
} from "./guest-files.js";
import { type LaunchConfig, launchOf, type QemuLauncher } from "./launcher.js";
import type { QmpClient, QmpMigrationInfo, QmpStatus } from "./qmp.js";
import {
  readSnapshot,
  SNAPSHOT_DISK_FILE,
  SNAPSHOT_MANIFEST_FILE,
  SNAPSHOT_MEMORY_FILE,
  serializeManifest,
} from "./snapshot-files.js";

/** Migration bandwidth cap during a snapshot: effectively unlimited (QEMU 7.2 defaults to 128 MiB/s). */
const SNAPSHOT_MAX_BANDWIDTH = 100 * 2 ** 30;

export interface QemuSnapshotsOptions {
  logger: Logger;
  launcher: QemuLauncher;
  /** Whether this host's guests run with KVM: a snapshot restores only the way it was taken. */
  kvm: boolean;
  /** QEMU runs as the sandbox's own uid, which must own the files it writes. */
  confine: boolean;
  /** How long a restore may take to load the guest's state. */
  restoreTimeoutMs: number;
}

/**
 * Pause to disk and resume for the QEMU runtime. A snapshot migrates the stopped guest's state into a
 * file and moves the disk overlay next to it, with links to the exact base image, kernel and initramfs
 * and a manifest written last; a restore starts the same command line with `-incoming` on a copy of
 * that disk and continues the guest.
 */
export class QemuSnapshots {
  readonly #opts: QemuSnapshotsOptions;

  constructor(opts: QemuSnapshotsOptions) {
    this.#opts = opts;
  }

  async snapshot(spec: GuestSpec, handle: GuestHandle, snapshotDir: string): Promise<SnapshotInfo> {
    const { launcher, confine } = this.#opts;
    const log = this.#opts.logger.child({ sandboxId: spec.sandboxId, runtime: "qemu" });
    const launch = launchOf(handle);
    const t0 = performance.now();
    await mkdir(snapshotDir, { recursive: true });
    // QEMU's `exec:` migration runs `cat` in QEMU's working directory (the sandbox directory) as QEMU's
    // uid, which may not traverse the directories above; so the stream goes to a file there, which is
    // created for it, and moves into the snapshot directory afterwards.
    const partialMemory = join(spec.sandboxDir, QEMU_FILES.workDir, PARTIAL_MEMORY);
    await rm(partialMemory, { force: true });
    await writeFile(partialMemory, "", { mode: 0o600 });
    if (confine) await chown(partialMemory, guestUid(spec.sandboxId), guestUid(spec.sandboxId));

    const qmp = await launcher.connect(spec, handle);
    let wasRunning = false;
    try {
      const status = await qmp.execute<QmpStatus>("query-status");
      wasRunning = status.running;
      await qmp.execute("migrate-set-parameters", { "max-bandwidth": SNAPSHOT_MAX_BANDWIDTH });
      if (wasRunning) await qmp.execute("stop");
      await qmp.execute("migrate", { uri: migrateToFileUri(PARTIAL_MEMORY) });
      await waitForMigration(qmp, 30_000 + launch.memoryMb * 100);
    } catch (err) {
      // Leave the guest as it was: a failed pause must not lose a running sandbox.
      if (wasRunning) await qmp.execute("cont").catch(() => undefined);
      qmp.close();
      await rm(partialMemory, { force: true });
      throw new QemuRuntimeError("SNAPSHOT_FAILED", `could not save the guest's state: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const migratedMs = performance.now() - t0;
    // A completed migration has flushed and released the disk, so the overlay is consistent from here on.
    await qmp.execute("quit", undefined, { timeoutMs: 2_000 }).catch(() => undefined);
    qmp.close();
    if (!(await waitForExit(handle.pid, handle.pidStartTime, 3_000))) {
      await launcher.terminate(spec, handle.pid, handle.pidStartTime);
    }

    // The manifest goes last: a snapshot without one is incomplete and will not be restored.
    await rm(join(snapshotDir, SNAPSHOT_MANIFEST_FILE), { force: true });
    if (confine) await chown(partialMemory, 0, 0);
    await moveFile(partialMemory, join(snapshotDir, SNAPSHOT_MEMORY_FILE));
    await moveFile(join(spec.sandboxDir, QEMU_FILES.disk), join(snapshotDir, SNAPSHOT_DISK_FILE));
    // The snapshot keeps its own link to the base image, so removing the image version cannot break a resume.
    launch.backingFile = await linkOrReference(launch.backingFile, join(snapshotDir, SNAPSHOT_LINKS.base));
    launch.kernelPath = await linkOrReference(launch.kernelPath, join(snapshotDir, SNAPSHOT_LINKS.kernel));
    if (launch.initrdPath) {
      launch.initrdPath = await linkOrReference(launch.initrdPath, join(snapshotDir, SNAPSHOT_LINKS.initrd));
    }
    for (const file of [QEMU_FILES.base, QEMU_FILES.kernel, QEMU_FILES.initrd]) {
      await rm(join(spec.sandboxDir, file), { force: true });
    }
    await writeFileAtomic(
      join(snapshotDir, SNAPSHOT_MANIFEST_FILE),
      serializeManifest({ format: "wrenn-qemu-snapshot/1", ...launch, createdAt: new Date().toISOString() }),
    );
    for (const file of [QEMU_FILES.qmpSocket, QEMU_FILES.pidFile])
      await rm(join(spec.sandboxDir, file), { force: true });

    const files: SnapshotInfo["files"] = [];
    for (const name of [SNAPSHOT_MEMORY_FILE, SNAPSHOT_DISK_FILE, SNAPSHOT_MANIFEST_FILE]) {
      files.push({ name, sizeBytes: (await stat(join(snapshotDir, name))).size });
    }
    log.info("qemu snapshot written", {
      migrateMs: Math.round(migratedMs),
      totalMs: Math.round(performance.now() - t0),
      files,
    });
    return { dir: snapshotDir, files };
  }

  /**
   * Copies a pause snapshot to `toDir` as a saved snapshot of its own: the memory stream is hard-linked
   * (a later pause of the source replaces its file by rename, never writes into it), the disk overlay
   * copied, and the base image, kernel and initramfs linked from the new directory, so it outlives the
   * source's pause directory. restore() starts any number of guests from it: each gets a copy of the disk.
   */
  async clone(fromDir: string, toDir: string): Promise<void> {
    const manifest = await readSnapshot(fromDir);
    await mkdir(toDir, { recursive: true });
    await linkOrCopy(join(fromDir, SNAPSHOT_MEMORY_FILE), join(toDir, SNAPSHOT_MEMORY_FILE));
    await copyFileAtomic(join(fromDir, SNAPSHOT_DISK_FILE), join(toDir, SNAPSHOT_DISK_FILE));
    const backingFile = await linkOrReference(manifest.backingFile, join(toDir, SNAPSHOT_LINKS.base));
    const kernelPath = await linkOrReference(manifest.kernelPath, join(toDir, SNAPSHOT_LINKS.kernel));
    const initrdPath = manifest.initrdPath
      ? await linkOrReference(manifest.initrdPath, join(toDir, SNAPSHOT_LINKS.initrd))
      : undefined;
    await writeFileAtomic(
      join(toDir, SNAPSHOT_MANIFEST_FILE),
      serializeManifest({ ...manifest, backingFile, kernelPath, ...(initrdPath ? { initrdPath } : {}) }),
    );
  }

  async restore(spec: GuestSpec, snapshotDir: string, signal?: AbortSignal): Promise<GuestHandle> {
    const { launcher, kvm } = this.#opts;
    const log = this.#opts.logger.child({ sandboxId: spec.sandboxId, runtime: "qemu" });
    const t0 = performance.now();
    const manifest = await readSnapshot(snapshotDir);
    if (manifest.kvm !== kvm) {
      throw new QemuRuntimeError(
        "SNAPSHOT_INCOMPATIBLE",
        `snapshot in ${snapshotDir} was taken ${manifest.kvm ? "with" : "without"} KVM and cannot be restored ${kvm ? "with" : "without"} it`,
      );
    }
    await requireFile(manifest.kernelPath, "SNAPSHOT_INCOMPATIBLE", "guest kernel the snapshot was taken with");
    if (manifest.initrdPath) {
      await requireFile(manifest.initrdPath, "SNAPSHOT_INCOMPATIBLE", "initramfs the snapshot was taken with");
    }
    await requireFile(manifest.backingFile, "SNAPSHOT_INCOMPATIBLE", "template image the snapshot's disk is based on");
    if (manifest.backingIdentity) {
      const now = await fileIdentity(manifest.backingFile);
      const then = manifest.backingIdentity;
      if (now.size !== then.size || now.mtimeMs !== then.mtimeMs || now.ino !== then.ino) {
        // The overlay records only the blocks the guest changed; on another base image its filesystem would be garbage.
        throw new QemuRuntimeError(
          "SNAPSHOT_INCOMPATIBLE",
          `template image ${manifest.backingFile} changed since the snapshot was taken (rebuilt?); the snapshot's disk only works on the image it was taken on`,
        );
      }
    }

    // The snapshot keeps its own disk, so it stays a consistent (memory, disk) pair until the next pause or destroy.
    await mkdir(spec.sandboxDir, { recursive: true });
    await copyFileAtomic(join(snapshotDir, SNAPSHOT_DISK_FILE), join(spec.sandboxDir, QEMU_FILES.disk));
    const backingFile = await linkOrReference(manifest.backingFile, join(spec.sandboxDir, QEMU_FILES.base));

    const launch: LaunchConfig = {
      vcpus: manifest.vcpus,
      memoryMb: manifest.memoryMb,
      kvm: manifest.kvm,
      tscKhz: manifest.tscKhz,
      kernelPath: await linkOrReference(manifest.kernelPath, join(spec.sandboxDir, QEMU_FILES.kernel)),
      initrdPath: manifest.initrdPath
        ? await linkOrReference(manifest.initrdPath, join(spec.sandboxDir, QEMU_FILES.initrd))
        : undefined,
      kernelCmdline: manifest.kernelCmdline,
      mac: manifest.mac,
      backingFile,
      backingIdentity: manifest.backingIdentity,
    };
    let handle: GuestHandle | undefined;
    try {
      handle = await launcher.launch(spec, launch, join(snapshotDir, SNAPSHOT_MEMORY_FILE), signal);
      const launchedMs = performance.now() - t0;
      await launcher.withQmp(spec, handle, async (qmp) => {
        await this.#waitForIncoming(qmp, spec);
        await qmp.execute("cont");
      });
      log.info("qemu restored", {
        pid: handle.pid,
        launchMs: Math.round(launchedMs),
        totalMs: Math.round(performance.now() - t0),
      });
      return handle;
    } catch (err) {
      if (handle) await launcher.terminate(spec, handle.pid, handle.pidStartTime);
      // The snapshot itself is untouched; only the sandbox's copies go.
      await removeGuestFiles(spec.sandboxDir);
      const output = await launcher.logSinceLaunch(spec, 1000);
      // QEMU reads the stream while it starts; a damaged one makes it exit before or just after QMP answers.
      if (/load of migration failed|migration|vmstate|section/i.test(output)) {
        throw new QemuRuntimeError("SNAPSHOT_CORRUPT", `QEMU could not load the snapshot: ${lastLines(output, 3)}`, {
          cause: err,
        });
      }
      if (err instanceof QemuRuntimeError) throw err;
      throw new QemuRuntimeError("RESTORE_FAILED", `could not restore the guest: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /** Waits until an incoming migration has loaded (the guest is then paused, as it was when saved). */
  async #waitForIncoming(qmp: QmpClient, spec: GuestSpec): Promise<void> {
    const timeoutMs = this.#opts.restoreTimeoutMs;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let status: QmpStatus;
      try {
        status = await qmp.execute<QmpStatus>("query-status");
      } catch (err) {
        const output = await this.#opts.launcher.logSinceLaunch(spec, 1000);
        throw new QemuRuntimeError(
          "SNAPSHOT_CORRUPT",
          `QEMU could not load the snapshot${output ? `: ${output}` : ` (${(err as Error).message})`}`,
          { cause: err },
        );
      }
      if (status.status === "paused" || status.running) return;
      if (status.status !== "inmigrate" && status.status !== "prelaunch") {
        throw new QemuRuntimeError("RESTORE_FAILED", `guest is in state "${status.status}" after loading the snapshot`);
      }
      if (Date.now() >= deadline) {
        throw new QemuRuntimeError("RESTORE_FAILED", `snapshot not loaded after ${timeoutMs} ms`);
      }
      await sleep(10);
    }
  }
}

async function waitForMigration(qmp: QmpClient, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await qmp.execute<QmpMigrationInfo>("query-migrate");
    if (info.status === "completed") return;
    if (info.status === "failed" || info.status === "cancelled") {
      throw new Error(`migration ${info.status}${info["error-desc"] ? `: ${info["error-desc"]}` : ""}`);
    }
    if (Date.now() >= deadline) throw new Error(`migration still ${info.status ?? "unknown"} after ${timeoutMs} ms`);
    await sleep(5);
  }
}

function lastLines(text: string, count: number): string {
  return text.trim().split("\n").slice(-count).join(" / ");
}
