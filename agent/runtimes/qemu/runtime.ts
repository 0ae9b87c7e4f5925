import { spawn } from "node:child_process";
import { constants as fsConstants } from "node:fs";
import {
  access,
  chown,
  copyFile,
  link as hardLink,
  mkdir,
  open,
  readFile,
  realpath,
  rename,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import type { Exec } from "../../exec.js";
import type { Logger } from "../../logger.js";
import { processAlive, readProcStat, waitForExit } from "../../process-identity.js";
import { guestKernelCmdline, hostTscKhz } from "../kernel-cmdline.js";
import type { GuestHandle, GuestSpec, Runtime, RuntimeCapabilities, SnapshotInfo } from "../types.js";
import { buildQemuArgs, migrateToFileUri, qemuKernelCmdline } from "./cmdline.js";
import { QemuRuntimeError } from "./errors.js";
import { processArgv, signalProcess } from "./process.js";
import { QmpClient, type QmpMigrationInfo, type QmpStatus } from "./qmp.js";
import {
  readSnapshot,
  SNAPSHOT_DISK_FILE,
  SNAPSHOT_MANIFEST_FILE,
  SNAPSHOT_MEMORY_FILE,
  serializeManifest,
} from "./snapshot-files.js";

/**
 * The `qemu` runtime: each guest is a `qemu-system-x86_64 -M microvm` process started inside the
 * sandbox's network namespace, detached from the agent (own session), controlled over QMP, with a
 * qcow2 overlay on the template's ext4 image as its disk. Pause to disk migrates the stopped guest's
 * state into a file and moves the overlay next to it; resume starts the same command line with
 * `-incoming` and continues the guest.
 */

/** Files the runtime keeps in the sandbox directory. */
export const QEMU_FILES = {
  disk: "disk.qcow2",
  qmpSocket: "qmp.sock",
  pidFile: "qemu.pid",
  /** QEMU's own stdout/stderr (start-up errors, failed migrations). Kept after stop. */
  qemuLog: "qemu.log",
  /** The guest's serial console. Kept after stop. */
  console: "console.log",
  /**
   * QEMU's working directory, owned by the uid QEMU runs as: `exec:` migrations write the snapshot's
   * memory stream here (as `memory.partial`) before it moves into the snapshot directory.
   */
  workDir: "qemu-work",
  /**
   * Hard link to the template image version the overlay is based on, so that the image builder
   * replacing or removing that version cannot pull the base out from under a running or paused
   * sandbox (the inode lives as long as a link does).
   */
  base: "base.ext4",
  /** Hard links to the kernel and initramfs version the guest booted, for the same reason. */
  kernel: "vmlinux",
  initrd: "initramfs.cpio.gz",
} as const;

/** The base image, kernel and initramfs links kept with a snapshot (same names as in the sandbox directory). */
const SNAPSHOT_LINKS = { base: "base.ext4", kernel: "vmlinux", initrd: "initramfs.cpio.gz" } as const;

const PARTIAL_MEMORY = "memory.partial";

/** File descriptor on which a restoring QEMU reads the snapshot's memory stream (`-incoming fd:3`). */
const INCOMING_FD = 3;
/** Descriptors of the disk overlay (read-write and read-only) and of its backing image, when confined. */
const DISK_FDS = { readWrite: 4, readOnly: 5, backingReadOnly: 6 } as const;

/** Migration bandwidth cap during a snapshot: effectively unlimited (QEMU 7.2 defaults to 128 MiB/s). */
const SNAPSHOT_MAX_BANDWIDTH = 100 * 2 ** 30;
/** Longest unix socket path Linux accepts (sun_path is 108 bytes including the NUL). */
const MAX_UNIX_SOCKET_PATH = 107;

export interface QemuRuntimeOptions {
  exec: Exec;
  logger: Logger;
  /** Default `qemu-system-x86_64` from PATH. */
  qemuBinary?: string;
  /** Default `qemu-img` from PATH. */
  qemuImgBinary?: string;
  /** Default `ip` from PATH (used as `ip netns exec`). */
  ipBinary?: string;
  /** Use KVM; default: {@link probeKvm}. */
  kvm?: boolean;
  /** Host TSC frequency for TCG guests; default read from the host. */
  tscKhz?: number;
  /** TCG translation cache size in MiB. */
  tbSizeMb?: number;
  /** How long QEMU may take to open its QMP socket after launch. */
  startTimeoutMs?: number;
  /** How long a restore may take to load the guest's state. */
  restoreTimeoutMs?: number;
  /**
   * Run each QEMU as its own unprivileged uid with QEMU's seccomp filter on (default: when the agent
   * runs as root, which it must to manage network namespaces).
   */
  confine?: boolean;
}

/** First uid of the range QEMU processes run as; far above login users and the usual subuid ranges. */
const GUEST_UID_BASE = 1_500_000_000;
const GUEST_UID_SPAN = 100_000_000;

/**
 * The uid (and gid) a sandbox's QEMU drops to: derived from the sandbox id, so it is the same after a
 * restore or an agent restart, and different between sandboxes so that one QEMU cannot signal or
 * trace another's.
 */
export function guestUid(sandboxId: string): number {
  // FNV-1a: stable and well spread over the short ids.
  let hash = 0x811c9dc5;
  for (let i = 0; i < sandboxId.length; i++) {
    hash ^= sandboxId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return GUEST_UID_BASE + (hash % GUEST_UID_SPAN);
}

/** Everything about a running guest's command line that a snapshot must reproduce; stored in the handle. */
const launchSchema = z.object({
  vcpus: z.number().int().positive(),
  memoryMb: z.number().int().positive(),
  kvm: z.boolean(),
  tscKhz: z.number().int().positive().optional(),
  kernelPath: z.string(),
  initrdPath: z.string().optional(),
  kernelCmdline: z.string(),
  mac: z.string(),
  backingFile: z.string(),
  backingIdentity: z.object({ size: z.number(), mtimeMs: z.number(), ino: z.number() }).optional(),
  qemuVersion: z.string().optional(),
});
type LaunchConfig = z.infer<typeof launchSchema>;

/**
 * Whether QEMU can really run a guest with KVM here. /dev/kvm being present is not enough: on nested
 * hosts such as the CI machines (a PVM guest) the device exists but QEMU aborts setting up the vCPU's
 * MSRs. So start a paused microvm with KVM, ask its status over QMP on stdio and quit (about 50 ms).
 */
export async function probeKvm(exec: Exec, qemuBinary = "qemu-system-x86_64"): Promise<boolean> {
  try {
    await access("/dev/kvm", fsConstants.R_OK | fsConstants.W_OK);
  } catch {
    return false;
  }
  const qmpScript = ['{"execute":"qmp_capabilities"}', '{"execute":"query-status"}', '{"execute":"quit"}', ""].join(
    "\n",
  );
  try {
    const result = await exec(
      qemuBinary,
      ["-accel", "kvm", "-M", "microvm", "-cpu", "host", "-nodefaults", "-display", "none", "-S", "-qmp", "stdio"],
      { input: qmpScript, timeoutMs: 10_000, allowFailure: true },
    );
    return result.exitCode === 0 && result.stdout.includes('"prelaunch"');
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The last `bytes` of a log file, from `since` (its size before the launch) onwards. */
async function tailOf(path: string, bytes = 2000, since = 0): Promise<string> {
  try {
    const handle = await open(path, "r");
    try {
      const { size } = await handle.stat();
      const start = Math.max(since, size - bytes, 0);
      const buffer = Buffer.alloc(size - start);
      await handle.read(buffer, 0, buffer.length, start);
      return buffer.toString("utf8").trim();
    } finally {
      await handle.close();
    }
  } catch {
    return "";
  }
}

export class QemuRuntime implements Runtime {
  readonly name = "qemu" as const;
  private readonly exec: Exec;
  private readonly logger: Logger;
  private readonly qemuBinary: string;
  private readonly qemuImgBinary: string;
  private readonly ipBinary: string;
  private readonly kvm: boolean;
  private readonly tbSizeMb: number | undefined;
  private readonly startTimeoutMs: number;
  private readonly restoreTimeoutMs: number;
  private readonly confine: boolean;
  private tscKhz: number | undefined;
  /** Size of each sandbox's qemu.log before its latest launch, so errors quote only that launch's output. */
  private readonly logOffsets = new Map<string, number>();

  private constructor(opts: QemuRuntimeOptions, kvm: boolean) {
    this.exec = opts.exec;
    this.logger = opts.logger;
    this.qemuBinary = opts.qemuBinary ?? "qemu-system-x86_64";
    this.qemuImgBinary = opts.qemuImgBinary ?? "qemu-img";
    this.ipBinary = opts.ipBinary ?? "ip";
    this.kvm = kvm;
    this.tscKhz = opts.tscKhz;
    this.tbSizeMb = opts.tbSizeMb;
    this.startTimeoutMs = opts.startTimeoutMs ?? 15_000;
    this.restoreTimeoutMs = opts.restoreTimeoutMs ?? 60_000;
    this.confine = opts.confine ?? process.getuid?.() === 0;
  }

  /** Creates the runtime, detecting KVM unless told. */
  static async create(opts: QemuRuntimeOptions): Promise<QemuRuntime> {
    return new QemuRuntime(opts, opts.kvm ?? (await probeKvm(opts.exec, opts.qemuBinary)));
  }

  capabilities(): RuntimeCapabilities {
    // ptp_kvm needs kvm-clock; under TCG the guest has no PHC and envd steps the clock from /init instead.
    return { pauseToDisk: true, guestPhc: this.kvm, kvm: this.kvm };
  }

  async start(spec: GuestSpec, signal?: AbortSignal): Promise<GuestHandle> {
    const log = this.logger.child({ sandboxId: spec.sandboxId, runtime: "qemu" });
    const started = performance.now();
    await this.requireFile(spec.kernelPath, "KERNEL_MISSING", "guest kernel");
    await this.requireFile(spec.imageRootfsExt4, "IMAGE_MISSING", `image of template "${spec.template}"`);
    // Images are published as a symlink to a versioned directory; the overlay belongs to this version.
    const imageVersion = await realpath(spec.imageRootfsExt4);
    await mkdir(spec.sandboxDir, { recursive: true });
    try {
      const backingFile = await linkOrReference(imageVersion, join(spec.sandboxDir, QEMU_FILES.base));
      const disk = join(spec.sandboxDir, QEMU_FILES.disk);
      await rm(disk, { force: true });
      try {
        await this.exec(
          this.qemuImgBinary,
          ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", imageVersion, disk],
          signal ? { signal, timeoutMs: 30_000 } : { timeoutMs: 30_000 },
        );
      } catch (err) {
        throw new QemuRuntimeError(
          "START_FAILED",
          `could not create the guest disk overlay: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }
      const launch: LaunchConfig = {
        vcpus: spec.vcpus,
        memoryMb: spec.memoryMb,
        kvm: this.kvm,
        tscKhz: this.kvm ? undefined : await this.hostTsc(),
        // The exact version behind `current`, linked so that a snapshot keeps it even after `current` moves on.
        kernelPath: await linkOrReference(await realpath(spec.kernelPath), join(spec.sandboxDir, QEMU_FILES.kernel)),
        initrdPath: (await exists(spec.initrdPath))
          ? await linkOrReference(await realpath(spec.initrdPath), join(spec.sandboxDir, QEMU_FILES.initrd))
          : undefined,
        kernelCmdline: "",
        mac: spec.network.guestMac,
        backingFile,
        backingIdentity: await fileIdentity(backingFile),
      };
      launch.kernelCmdline = qemuKernelCmdline({ base: guestKernelCmdline(), kvm: this.kvm, tscKhz: launch.tscKhz });
      const handle = await this.launch(spec, launch, undefined, signal);
      log.info("qemu started", { pid: handle.pid, ms: Math.round(performance.now() - started), kvm: this.kvm });
      return handle;
    } catch (err) {
      // A failed start leaves only the logs behind.
      await this.removeGuestFiles(spec);
      throw err;
    }
  }

  async stop(spec: GuestSpec, handle: GuestHandle | undefined): Promise<void> {
    const target = handle ? { pid: handle.pid, startTime: handle.pidStartTime } : await this.findStrayQemu(spec);
    if (target) await this.terminate(spec, target.pid, target.startTime);
    this.logOffsets.delete(spec.sandboxId);
    await this.removeGuestFiles(spec);
  }

  /** Removes everything the runtime puts in the sandbox directory except the logs. */
  private async removeGuestFiles(spec: GuestSpec): Promise<void> {
    for (const file of [
      QEMU_FILES.disk,
      `${QEMU_FILES.disk}.partial`,
      QEMU_FILES.base,
      QEMU_FILES.kernel,
      QEMU_FILES.initrd,
      QEMU_FILES.qmpSocket,
      QEMU_FILES.pidFile,
      QEMU_FILES.workDir,
    ]) {
      await rm(join(spec.sandboxDir, file), { recursive: true, force: true });
    }
  }

  isAlive(handle: GuestHandle): Promise<boolean> {
    return processAlive(handle.pid, handle.pidStartTime);
  }

  async freeze(spec: GuestSpec, handle: GuestHandle): Promise<void> {
    await this.withQmp(spec, handle, (qmp) => qmp.execute("stop"));
  }

  async thaw(spec: GuestSpec, handle: GuestHandle): Promise<void> {
    await this.withQmp(spec, handle, (qmp) => qmp.execute("cont"));
  }

  async snapshot(spec: GuestSpec, handle: GuestHandle, snapshotDir: string): Promise<SnapshotInfo> {
    const log = this.logger.child({ sandboxId: spec.sandboxId, runtime: "qemu" });
    const launch = this.launchOf(handle);
    const t0 = performance.now();
    await mkdir(snapshotDir, { recursive: true });
    // QEMU's `exec:` migration runs `cat` in QEMU's working directory (the sandbox directory) as QEMU's
    // uid, which may not traverse the directories above; so the stream goes to a file there, which is
    // created for it, and moves into the snapshot directory afterwards.
    const partialMemory = join(spec.sandboxDir, QEMU_FILES.workDir, PARTIAL_MEMORY);
    await rm(partialMemory, { force: true });
    await writeFile(partialMemory, "", { mode: 0o600 });
    if (this.confine) await chown(partialMemory, guestUid(spec.sandboxId), guestUid(spec.sandboxId));

    const qmp = await this.connect(spec, handle);
    let wasRunning = false;
    try {
      const status = await qmp.execute<QmpStatus>("query-status");
      wasRunning = status.running;
      await qmp.execute("migrate-set-parameters", { "max-bandwidth": SNAPSHOT_MAX_BANDWIDTH });
      if (wasRunning) await qmp.execute("stop");
      await qmp.execute("migrate", { uri: migrateToFileUri(PARTIAL_MEMORY) });
      await this.waitForMigration(qmp, 30_000 + launch.memoryMb * 100);
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
      await this.terminate(spec, handle.pid, handle.pidStartTime);
    }

    // The manifest goes last: a snapshot without one is incomplete and will not be restored.
    await rm(join(snapshotDir, SNAPSHOT_MANIFEST_FILE), { force: true });
    if (this.confine) await chown(partialMemory, 0, 0);
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
    const manifestTmp = join(snapshotDir, `${SNAPSHOT_MANIFEST_FILE}.partial`);
    await writeFile(
      manifestTmp,
      serializeManifest({ format: "wrenn-qemu-snapshot/1", ...launch, createdAt: new Date().toISOString() }),
    );
    await rename(manifestTmp, join(snapshotDir, SNAPSHOT_MANIFEST_FILE));
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

  async restore(spec: GuestSpec, snapshotDir: string, signal?: AbortSignal): Promise<GuestHandle> {
    const log = this.logger.child({ sandboxId: spec.sandboxId, runtime: "qemu" });
    const t0 = performance.now();
    const manifest = await readSnapshot(snapshotDir);
    if (manifest.kvm !== this.kvm) {
      throw new QemuRuntimeError(
        "SNAPSHOT_INCOMPATIBLE",
        `snapshot in ${snapshotDir} was taken ${manifest.kvm ? "with" : "without"} KVM and cannot be restored ${this.kvm ? "with" : "without"} it`,
      );
    }
    await this.requireFile(manifest.kernelPath, "SNAPSHOT_INCOMPATIBLE", "guest kernel the snapshot was taken with");
    if (manifest.initrdPath) {
      await this.requireFile(manifest.initrdPath, "SNAPSHOT_INCOMPATIBLE", "initramfs the snapshot was taken with");
    }
    await this.requireFile(
      manifest.backingFile,
      "SNAPSHOT_INCOMPATIBLE",
      "template image the snapshot's disk is based on",
    );
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
    const disk = join(spec.sandboxDir, QEMU_FILES.disk);
    const partialDisk = `${disk}.partial`;
    await copyFile(join(snapshotDir, SNAPSHOT_DISK_FILE), partialDisk, fsConstants.COPYFILE_FICLONE);
    await rename(partialDisk, disk);
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
      handle = await this.launch(spec, launch, join(snapshotDir, SNAPSHOT_MEMORY_FILE), signal);
      const launchedMs = performance.now() - t0;
      await this.withQmp(spec, handle, async (qmp) => {
        await this.waitForIncoming(qmp, spec, this.restoreTimeoutMs);
        await qmp.execute("cont");
      });
      log.info("qemu restored", {
        pid: handle.pid,
        launchMs: Math.round(launchedMs),
        totalMs: Math.round(performance.now() - t0),
      });
      return handle;
    } catch (err) {
      if (handle) await this.terminate(spec, handle.pid, handle.pidStartTime);
      // The snapshot itself is untouched; only the sandbox's copies go.
      await this.removeGuestFiles(spec);
      const output = await tailOf(
        join(spec.sandboxDir, QEMU_FILES.qemuLog),
        1000,
        this.logOffsets.get(spec.sandboxId) ?? 0,
      );
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

  /** Starts QEMU detached in the sandbox's netns and waits until its QMP socket answers. */
  private async launch(
    spec: GuestSpec,
    launch: LaunchConfig,
    /** Snapshot memory file to restore from (handed to QEMU as an open file descriptor). */
    incomingFile: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<GuestHandle> {
    signal?.throwIfAborted();
    const qmpSocketPath = join(spec.sandboxDir, QEMU_FILES.qmpSocket);
    if (Buffer.byteLength(qmpSocketPath) > MAX_UNIX_SOCKET_PATH) {
      throw new QemuRuntimeError(
        "START_FAILED",
        `QMP socket path ${qmpSocketPath} is longer than the ${MAX_UNIX_SOCKET_PATH} bytes a unix socket allows; use a shorter state directory`,
      );
    }
    const pidFilePath = join(spec.sandboxDir, QEMU_FILES.pidFile);
    await rm(qmpSocketPath, { force: true });
    await rm(pidFilePath, { force: true });
    const args = buildQemuArgs({
      name: `wrenn-${spec.sandboxId}`,
      kernelPath: launch.kernelPath,
      initrdPath: launch.initrdPath,
      diskPath: join(spec.sandboxDir, QEMU_FILES.disk),
      tapName: spec.network.tapName,
      mac: launch.mac,
      vcpus: launch.vcpus,
      memoryMb: launch.memoryMb,
      qmpSocketPath,
      serialLogPath: join(spec.sandboxDir, QEMU_FILES.console),
      pidFilePath,
      kvm: launch.kvm,
      kernelCmdline: launch.kernelCmdline,
      tbSizeMb: this.tbSizeMb,
      incomingUri: incomingFile === undefined ? undefined : `fd:${INCOMING_FD}`,
      runAs: this.confine ? { uid: guestUid(spec.sandboxId), gid: guestUid(spec.sandboxId) } : undefined,
      diskFds: this.confine ? DISK_FDS : undefined,
      backingPath: launch.backingFile,
      seccomp: this.confine,
    });
    const qemuLog = join(spec.sandboxDir, QEMU_FILES.qemuLog);
    const logStart = await stat(qemuLog).then(
      (info) => info.size,
      () => 0,
    );
    this.logOffsets.set(spec.sandboxId, logStart);
    const workDir = join(spec.sandboxDir, QEMU_FILES.workDir);
    await rm(workDir, { recursive: true, force: true });
    await mkdir(workDir, { mode: 0o700 });
    if (this.confine) await chown(workDir, guestUid(spec.sandboxId), guestUid(spec.sandboxId));
    const pid = await this.spawnDetached(spec.network.netns, args, qemuLog, workDir, {
      incomingFile,
      disk: this.confine ? { overlay: join(spec.sandboxDir, QEMU_FILES.disk), backing: launch.backingFile } : undefined,
    });
    const procStat = await readProcStat(pid);
    const pidStartTime = procStat?.startTime ?? "";
    const handle: GuestHandle = { runtime: "qemu", pid, pidStartTime, data: {} };
    try {
      const qmp = await QmpClient.connect(qmpSocketPath, {
        timeoutMs: this.startTimeoutMs,
        ...(signal ? { signal } : {}),
        stillStarting: () => processAlive(pid, pidStartTime),
      });
      try {
        await qmp.execute<QmpStatus>("query-status");
        const v = qmp.version;
        handle.data = {
          ...launch,
          qemuVersion: v ? `${v.major}.${v.minor}.${v.micro}` : undefined,
        } satisfies LaunchConfig;
      } finally {
        qmp.close();
      }
      return handle;
    } catch (err) {
      await this.terminate(spec, pid, pidStartTime);
      const output = await tailOf(qemuLog, 2000, logStart);
      throw new QemuRuntimeError(
        "START_FAILED",
        `QEMU did not start: ${(err as Error).message}${output ? `; QEMU said: ${output}` : ""}`,
        { cause: err },
      );
    }
  }

  /**
   * Spawns QEMU in its own session so it outlives the request and the agent; `ip netns exec` execs
   * QEMU in place, so the PID is QEMU's. The one long-lived process the agent starts outside the
   * exec wrapper, which only runs commands to completion. On a restore the snapshot's memory file is
   * open on fd 3, so QEMU needs no access to the snapshot directory after dropping privileges.
   */
  private async spawnDetached(
    netns: string,
    args: string[],
    logPath: string,
    cwd: string,
    files: { incomingFile: string | undefined; disk: { overlay: string; backing: string } | undefined },
  ): Promise<number> {
    const opened: Awaited<ReturnType<typeof open>>[] = [];
    const openFile = async (path: string, flags: string) => {
      const handle = await open(path, flags);
      opened.push(handle);
      return handle.fd;
    };
    try {
      const stdio: ("ignore" | number)[] = ["ignore", await openFile(logPath, "a"), 0];
      stdio[2] = stdio[1] ?? "ignore";
      stdio[INCOMING_FD] = files.incomingFile === undefined ? "ignore" : await openFile(files.incomingFile, "r");
      if (files.disk) {
        stdio[DISK_FDS.readWrite] = await openFile(files.disk.overlay, "r+");
        stdio[DISK_FDS.readOnly] = await openFile(files.disk.overlay, "r");
        stdio[DISK_FDS.backingReadOnly] = await openFile(files.disk.backing, "r");
      }
      const [file, argv] =
        netns === "" ? [this.qemuBinary, args] : [this.ipBinary, ["netns", "exec", netns, this.qemuBinary, ...args]];
      return await new Promise<number>((resolve, reject) => {
        const child = spawn(file, argv, { detached: true, cwd, stdio });
        child.once("error", (err) =>
          reject(new QemuRuntimeError("START_FAILED", `could not run ${file}: ${err.message}`, { cause: err })),
        );
        child.once("spawn", () => {
          child.unref();
          if (child.pid === undefined) reject(new QemuRuntimeError("START_FAILED", "QEMU has no PID"));
          else resolve(child.pid);
        });
      });
    } finally {
      // QEMU holds its own copies now.
      for (const handle of opened) await handle.close();
    }
  }

  /** Ends a QEMU process: QMP `quit` first (clean disk close), SIGKILL if it does not go. */
  private async terminate(spec: GuestSpec, pid: number, startTime: string | undefined): Promise<void> {
    if (!(await processAlive(pid, startTime))) return;
    try {
      const qmp = await QmpClient.connect(join(spec.sandboxDir, QEMU_FILES.qmpSocket), {
        timeoutMs: 1_000,
        stillStarting: () => processAlive(pid, startTime),
      });
      try {
        await qmp.execute("quit", undefined, { timeoutMs: 1_000 });
      } finally {
        qmp.close();
      }
    } catch {
      // No QMP (still starting, or wedged): fall through to the signal.
    }
    if (await waitForExit(pid, startTime, 3_000)) return;
    this.logger.warn("qemu ignored quit; killing it", { sandboxId: spec.sandboxId, pid });
    await signalProcess(pid, startTime, "SIGKILL");
    if (!(await waitForExit(pid, startTime, 5_000))) {
      throw new QemuRuntimeError("QMP_FAILED", `QEMU process ${pid} did not exit after SIGKILL`);
    }
  }

  /** A QEMU left behind without a recorded handle (agent crashed mid-start): found by its pidfile and argv. */
  private async findStrayQemu(spec: GuestSpec): Promise<{ pid: number; startTime: string } | undefined> {
    let pid: number;
    try {
      pid = Number.parseInt(await readFile(join(spec.sandboxDir, QEMU_FILES.pidFile), "utf8"), 10);
    } catch {
      return undefined;
    }
    if (!Number.isInteger(pid) || pid <= 1) return undefined;
    const argv = await processArgv(pid);
    const qmpArg = `unix:${join(spec.sandboxDir, QEMU_FILES.qmpSocket)},`;
    if (!argv?.some((a) => a.startsWith(qmpArg))) return undefined;
    const stat = await readProcStat(pid);
    return stat ? { pid, startTime: stat.startTime } : undefined;
  }

  private async waitForMigration(qmp: QmpClient, timeoutMs: number): Promise<void> {
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

  /** Waits until an incoming migration has loaded (the guest is then paused, as it was when saved). */
  private async waitForIncoming(qmp: QmpClient, spec: GuestSpec, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let status: QmpStatus;
      try {
        status = await qmp.execute<QmpStatus>("query-status");
      } catch (err) {
        const output = await tailOf(
          join(spec.sandboxDir, QEMU_FILES.qemuLog),
          1000,
          this.logOffsets.get(spec.sandboxId) ?? 0,
        );
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

  private async connect(spec: GuestSpec, handle: GuestHandle): Promise<QmpClient> {
    if (!(await processAlive(handle.pid, handle.pidStartTime))) {
      throw new QemuRuntimeError(
        "QMP_FAILED",
        `QEMU process ${handle.pid} of sandbox ${spec.sandboxId} is not running`,
      );
    }
    try {
      return await QmpClient.connect(join(spec.sandboxDir, QEMU_FILES.qmpSocket), { timeoutMs: 5_000 });
    } catch (err) {
      throw new QemuRuntimeError(
        "QMP_FAILED",
        `cannot reach QEMU of sandbox ${spec.sandboxId}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  private async withQmp<T>(spec: GuestSpec, handle: GuestHandle, fn: (qmp: QmpClient) => Promise<T>): Promise<T> {
    const qmp = await this.connect(spec, handle);
    try {
      return await fn(qmp);
    } finally {
      qmp.close();
    }
  }

  private launchOf(handle: GuestHandle): LaunchConfig {
    const parsed = launchSchema.safeParse(handle.data);
    if (!parsed.success) {
      throw new QemuRuntimeError("SNAPSHOT_FAILED", "the guest handle lacks its QEMU launch configuration");
    }
    return parsed.data;
  }

  private async hostTsc(): Promise<number> {
    this.tscKhz ??= await hostTscKhz();
    if (this.tscKhz === undefined) {
      throw new QemuRuntimeError("START_FAILED", "cannot read the host TSC frequency, which TCG guests need");
    }
    return this.tscKhz;
  }

  private async requireFile(
    path: string,
    reason: "KERNEL_MISSING" | "IMAGE_MISSING" | "SNAPSHOT_INCOMPATIBLE",
    what: string,
  ): Promise<void> {
    if (!(await exists(path))) throw new QemuRuntimeError(reason, `${what} not found at ${path}`);
  }
}

/**
 * Hard-links `target` at `link` (replacing an older link) and returns the link; when that is not
 * possible (another filesystem) returns `target` itself, which then must not go away.
 */
async function linkOrReference(target: string, link: string): Promise<string> {
  if (target === link) return link;
  await rm(link, { force: true });
  try {
    await hardLink(target, link);
    return link;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EXDEV" || code === "EPERM" || code === "EMLINK") return target;
    throw err;
  }
}

async function fileIdentity(path: string): Promise<{ size: number; mtimeMs: number; ino: number }> {
  const info = await stat(path);
  return { size: info.size, mtimeMs: info.mtimeMs, ino: info.ino };
}

function lastLines(text: string, count: number): string {
  return text.trim().split("\n").slice(-count).join(" / ");
}

/** Renames, falling back to copy + delete across filesystems (sandboxes and snapshots may be on different disks). */
async function moveFile(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
    await copyFile(from, `${to}.partial`);
    await rename(`${to}.partial`, to);
    await rm(from, { force: true });
  }
}
