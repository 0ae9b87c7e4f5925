import { spawn } from "node:child_process";
import { chown, mkdir, open, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import type { Logger } from "../../logger.js";
import { processAlive, readProcStat, waitForExit } from "../../process-identity.js";
import type { GuestHandle, GuestSpec } from "../types.js";
import { buildQemuArgs } from "./cmdline.js";
import { QemuRuntimeError } from "./errors.js";
import { guestUid, QEMU_FILES } from "./guest-files.js";
import { processArgv, signalProcess } from "./process.js";
import { QmpClient, type QmpStatus } from "./qmp.js";

/**
 * The QEMU process as a host process: started detached in the sandbox's network namespace (its own
 * session, so it outlives the request and the agent), reached over its QMP socket, stopped with QMP
 * `quit` and then SIGKILL, and found again by its pidfile and argv when no handle was recorded.
 */

/** File descriptor on which a restoring QEMU reads the snapshot's memory stream (`-incoming fd:3`). */
const INCOMING_FD = 3;
/** Descriptors of the disk overlay (read-write and read-only) and of its backing image, when confined. */
const DISK_FDS = { readWrite: 4, readOnly: 5, backingReadOnly: 6 } as const;
/** Longest unix socket path Linux accepts (sun_path is 108 bytes including the NUL). */
const MAX_UNIX_SOCKET_PATH = 107;

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
export type LaunchConfig = z.infer<typeof launchSchema>;

/** The launch configuration a handle carries. */
export function launchOf(handle: GuestHandle): LaunchConfig {
  const parsed = launchSchema.safeParse(handle.data);
  if (!parsed.success) {
    throw new QemuRuntimeError("SNAPSHOT_FAILED", "the guest handle lacks its QEMU launch configuration");
  }
  return parsed.data;
}

export interface QemuLauncherOptions {
  logger: Logger;
  qemuBinary: string;
  /** `ip`, used as `ip netns exec`. */
  ipBinary: string;
  tbSizeMb: number | undefined;
  /** How long QEMU may take to open its QMP socket after launch. */
  startTimeoutMs: number;
  /** Run QEMU as the sandbox's own uid with its seccomp filter, with the disk handed over as descriptors. */
  confine: boolean;
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

export class QemuLauncher {
  readonly #opts: QemuLauncherOptions;
  /** Size of each sandbox's qemu.log before its latest launch, so errors quote only that launch's output. */
  readonly #logOffsets = new Map<string, number>();

  constructor(opts: QemuLauncherOptions) {
    this.#opts = opts;
  }

  /** Starts QEMU detached in the sandbox's netns and waits until its QMP socket answers. */
  async launch(
    spec: GuestSpec,
    launch: LaunchConfig,
    /** Snapshot memory file to restore from (handed to QEMU as an open file descriptor). */
    incomingFile: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<GuestHandle> {
    signal?.throwIfAborted();
    const { confine } = this.#opts;
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
      // A guest without an initramfs boots the microvm kernel, which has no ACPI and takes its virtio-mmio
      // devices from the command line; the initramfs belongs to Debian's cloud kernel, which needs ACPI.
      // Derived from the launch record, so a snapshot restores on the same machine it was taken on.
      acpi: launch.initrdPath !== undefined,
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
      tbSizeMb: this.#opts.tbSizeMb,
      incomingUri: incomingFile === undefined ? undefined : `fd:${INCOMING_FD}`,
      runAs: confine ? { uid: guestUid(spec.sandboxId), gid: guestUid(spec.sandboxId) } : undefined,
      diskFds: confine ? DISK_FDS : undefined,
      backingPath: launch.backingFile,
      seccomp: confine,
    });
    const qemuLog = join(spec.sandboxDir, QEMU_FILES.qemuLog);
    const logStart = await stat(qemuLog).then(
      (info) => info.size,
      () => 0,
    );
    this.#logOffsets.set(spec.sandboxId, logStart);
    const workDir = join(spec.sandboxDir, QEMU_FILES.workDir);
    await rm(workDir, { recursive: true, force: true });
    await mkdir(workDir, { mode: 0o700 });
    if (confine) await chown(workDir, guestUid(spec.sandboxId), guestUid(spec.sandboxId));
    const pid = await this.#spawnDetached(spec.network.netns, args, qemuLog, workDir, {
      incomingFile,
      disk: confine ? { overlay: join(spec.sandboxDir, QEMU_FILES.disk), backing: launch.backingFile } : undefined,
    });
    const procStat = await readProcStat(pid);
    const pidStartTime = procStat?.startTime ?? "";
    const handle: GuestHandle = { runtime: "qemu", pid, pidStartTime, data: {} };
    try {
      const qmp = await QmpClient.connect(qmpSocketPath, {
        timeoutMs: this.#opts.startTimeoutMs,
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
  async #spawnDetached(
    netns: string,
    args: string[],
    logPath: string,
    cwd: string,
    files: { incomingFile: string | undefined; disk: { overlay: string; backing: string } | undefined },
  ): Promise<number> {
    const { qemuBinary, ipBinary } = this.#opts;
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
        netns === "" ? [qemuBinary, args] : [ipBinary, ["netns", "exec", netns, qemuBinary, ...args]];
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
  async terminate(spec: GuestSpec, pid: number, startTime: string | undefined): Promise<void> {
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
    this.#opts.logger.warn("qemu ignored quit; killing it", { sandboxId: spec.sandboxId, pid });
    await signalProcess(pid, startTime, "SIGKILL");
    if (!(await waitForExit(pid, startTime, 5_000))) {
      throw new QemuRuntimeError("QMP_FAILED", `QEMU process ${pid} did not exit after SIGKILL`);
    }
  }

  /** Stops the guest's QEMU: the one in the handle, or without one a stray found by pidfile and argv. */
  async stop(spec: GuestSpec, handle: GuestHandle | undefined): Promise<void> {
    const target = handle ? { pid: handle.pid, startTime: handle.pidStartTime } : await this.#findStray(spec);
    if (target) await this.terminate(spec, target.pid, target.startTime);
    this.#logOffsets.delete(spec.sandboxId);
  }

  /** A QEMU left behind without a recorded handle (agent crashed mid-start): found by its pidfile and argv. */
  async #findStray(spec: GuestSpec): Promise<{ pid: number; startTime: string } | undefined> {
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

  /** What QEMU wrote to its log since the sandbox's latest launch (its last `bytes`). */
  logSinceLaunch(spec: GuestSpec, bytes: number): Promise<string> {
    return tailOf(join(spec.sandboxDir, QEMU_FILES.qemuLog), bytes, this.#logOffsets.get(spec.sandboxId) ?? 0);
  }

  /** A QMP connection to the guest's QEMU, which must still be the process in the handle. */
  async connect(spec: GuestSpec, handle: GuestHandle): Promise<QmpClient> {
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

  async withQmp<T>(spec: GuestSpec, handle: GuestHandle, fn: (qmp: QmpClient) => Promise<T>): Promise<T> {
    const qmp = await this.connect(spec, handle);
    try {
      return await fn(qmp);
    } finally {
      qmp.close();
    }
  }
}
