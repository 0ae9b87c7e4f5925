import { constants as fsConstants } from "node:fs";
import { access, mkdir, realpath, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Exec } from "../../exec.js";
import type { Logger } from "../../logger.js";
import { processAlive } from "../../process-identity.js";
import { guestKernelCmdline, hostTscKhz } from "../kernel-cmdline.js";
import type { GuestHandle, GuestSpec, Runtime, RuntimeCapabilities, SnapshotInfo } from "../types.js";
import { exists, linkOrReference } from "../vm-files.js";
import { qemuKernelCmdline } from "./cmdline.js";
import { QemuRuntimeError } from "./errors.js";
import { fileIdentity, QEMU_FILES, removeGuestFiles, requireFile } from "./guest-files.js";
import { type LaunchConfig, QemuLauncher } from "./launcher.js";
import { QemuSnapshots } from "./snapshots.js";

export { guestUid, QEMU_FILES } from "./guest-files.js";

/**
 * The `qemu` runtime: each guest is a `qemu-system-x86_64 -M microvm` process started inside the
 * sandbox's network namespace, detached from the agent (own session), controlled over QMP, with a
 * qcow2 overlay on the template's ext4 image as its disk. Pause to disk migrates the stopped guest's
 * state into a file and moves the overlay next to it; resume starts the same command line with
 * `-incoming` and continues the guest. The process itself is the launcher's (launcher.ts), pause to
 * disk and resume are snapshots.ts; this file is the lifecycle.
 */

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

export class QemuRuntime implements Runtime {
  readonly name = "qemu" as const;
  private readonly exec: Exec;
  private readonly logger: Logger;
  private readonly qemuImgBinary: string;
  private readonly kvm: boolean;
  private tscKhz: number | undefined;
  private readonly launcher: QemuLauncher;
  private readonly snapshots: QemuSnapshots;

  private constructor(opts: QemuRuntimeOptions, kvm: boolean) {
    this.exec = opts.exec;
    this.logger = opts.logger;
    this.qemuImgBinary = opts.qemuImgBinary ?? "qemu-img";
    this.kvm = kvm;
    this.tscKhz = opts.tscKhz;
    const confine = opts.confine ?? process.getuid?.() === 0;
    this.launcher = new QemuLauncher({
      logger: opts.logger,
      qemuBinary: opts.qemuBinary ?? "qemu-system-x86_64",
      ipBinary: opts.ipBinary ?? "ip",
      tbSizeMb: opts.tbSizeMb,
      startTimeoutMs: opts.startTimeoutMs ?? 15_000,
      confine,
    });
    this.snapshots = new QemuSnapshots({
      logger: opts.logger,
      launcher: this.launcher,
      kvm,
      confine,
      restoreTimeoutMs: opts.restoreTimeoutMs ?? 60_000,
    });
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
    // The microvm kernel (drivers built in, no initramfs) boots ~2x faster under TCG; Debian's cloud
    // kernel with its initramfs is the fallback when the image builder could not build it.
    const kernel =
      spec.microvmKernelPath !== undefined && (await exists(spec.microvmKernelPath))
        ? spec.microvmKernelPath
        : spec.kernelPath;
    const microvm = kernel !== spec.kernelPath;
    await requireFile(kernel, "KERNEL_MISSING", "guest kernel");
    await requireFile(spec.imageRootfsExt4, "IMAGE_MISSING", `image of template "${spec.template}"`);
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
        kernelPath: await linkOrReference(await realpath(kernel), join(spec.sandboxDir, QEMU_FILES.kernel)),
        initrdPath:
          !microvm && (await exists(spec.initrdPath))
            ? await linkOrReference(await realpath(spec.initrdPath), join(spec.sandboxDir, QEMU_FILES.initrd))
            : undefined,
        kernelCmdline: "",
        mac: spec.network.guestMac,
        backingFile,
        backingIdentity: await fileIdentity(backingFile),
      };
      launch.kernelCmdline = qemuKernelCmdline({ base: guestKernelCmdline(), kvm: this.kvm, tscKhz: launch.tscKhz });
      const handle = await this.launcher.launch(spec, launch, undefined, signal);
      log.info("qemu started", {
        pid: handle.pid,
        ms: Math.round(performance.now() - started),
        kvm: this.kvm,
        kernel: microvm ? "microvm" : "debian-cloud+initramfs",
      });
      return handle;
    } catch (err) {
      // A failed start leaves only the logs behind.
      await removeGuestFiles(spec.sandboxDir);
      throw err;
    }
  }

  async stop(spec: GuestSpec, handle: GuestHandle | undefined): Promise<void> {
    await this.launcher.stop(spec, handle);
    await removeGuestFiles(spec.sandboxDir);
  }

  isAlive(handle: GuestHandle): Promise<boolean> {
    return processAlive(handle.pid, handle.pidStartTime);
  }

  async freeze(spec: GuestSpec, handle: GuestHandle): Promise<void> {
    await this.launcher.withQmp(spec, handle, (qmp) => qmp.execute("stop"));
  }

  async thaw(spec: GuestSpec, handle: GuestHandle): Promise<void> {
    await this.launcher.withQmp(spec, handle, (qmp) => qmp.execute("cont"));
  }

  snapshot(spec: GuestSpec, handle: GuestHandle, snapshotDir: string): Promise<SnapshotInfo> {
    return this.snapshots.snapshot(spec, handle, snapshotDir);
  }

  restore(spec: GuestSpec, snapshotDir: string, signal?: AbortSignal): Promise<GuestHandle> {
    return this.snapshots.restore(spec, snapshotDir, signal);
  }

  cloneSnapshot(fromDir: string, toDir: string): Promise<void> {
    return this.snapshots.clone(fromDir, toDir);
  }

  private async hostTsc(): Promise<number> {
    this.tscKhz ??= await hostTscKhz();
    if (this.tscKhz === undefined) {
      throw new QemuRuntimeError("START_FAILED", "cannot read the host TSC frequency, which TCG guests need");
    }
    return this.tscKhz;
  }
}
