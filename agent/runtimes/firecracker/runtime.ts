import { chown, copyFile, mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Exec } from "../../exec.js";
import type { Logger } from "../../logger.js";
import { guestKernelCmdline } from "../kernel-cmdline.js";
import type { GuestHandle, GuestSpec, Runtime, RuntimeCapabilities, SnapshotInfo } from "../types.js";
import { exists, linkOrCopy, moveFile } from "../vm-files.js";
import { FirecrackerApiClient, FirecrackerApiError, waitForApiSocket } from "./api-client.js";
import { type FirecrackerErrorReason, FirecrackerRuntimeError } from "./errors.js";
import {
  type JailerOptions,
  jailerArgv,
  type SeccompSetting,
  seccompArgs,
  snapshotFiles,
  type VmPaths,
  vmPaths,
} from "./paths.js";
import { isProcessAlive, killProcessGroup, logTail, type ProcessIdentity, spawnDetached } from "./process.js";

export interface FirecrackerRuntimeOptions {
  exec: Exec;
  logger: Logger;
  /** Absolute path of the firecracker binary (see detectFirecracker). */
  firecrackerBin: string;
  /**
   * Run Firecracker under its jailer. The agent's configuration turns it on by default
   * (AGENT_FIRECRACKER_JAILER); without it Firecracker runs as root with the agent's view of the host.
   */
  jailer?: JailerOptions;
  /** Firecracker's seccomp filter: its built-in one (default), none, or a compiled filter file. */
  seccomp?: SeccompSetting;
  /** Bound on the wait for the API socket after spawning (default 5 s). */
  socketTimeoutMs?: number;
  /** Bound on one API request (default 60 s: a full snapshot of a large guest writes all its memory). */
  apiTimeoutMs?: number;
  /** How long stop() waits after SIGTERM before SIGKILL (default 5 s). */
  stopGraceMs?: number;
  /** Attach a virtio-rng entropy device (default true; needs Firecracker ≥ 1.2 and virtio_rng in the guest). */
  entropyDevice?: boolean;
  /** Extra kernel arguments appended to the shared guest command line. */
  extraKernelArgs?: string[];
}

/** What the runtime keeps in GuestHandle.data. */
interface FirecrackerHandleData {
  socketPath: string;
  jailRoot: string | undefined;
}

const vmstateNext = `${snapshotFiles.vmstate}.next`;
const memoryNext = `${snapshotFiles.memory}.next`;
/** Marks a saved snapshot (cloneSnapshot): restore() copies its disk out instead of moving it. */
const SAVED_SNAPSHOT_MARKER = "saved-snapshot";

/**
 * The Firecracker runtime: one Firecracker process per sandbox, started in the sandbox's network
 * namespace and detached from the agent, configured over its API socket. Pause to disk is a full
 * snapshot (vmstate + memory) plus the sandbox's disk, moved together into the snapshot directory;
 * resume loads it into a fresh process on whatever slot the manager chose (the TAP name and guest
 * address are the same in every slot, so the device configuration inside the snapshot still fits).
 */
export class FirecrackerRuntime implements Runtime {
  readonly name = "firecracker" as const;
  readonly #opts: FirecrackerRuntimeOptions;

  constructor(options: FirecrackerRuntimeOptions) {
    if (options.jailer !== undefined && !basename(options.firecrackerBin).includes("firecracker")) {
      throw new Error(`the jailer only execs a binary whose name contains "firecracker": ${options.firecrackerBin}`);
    }
    this.#opts = options;
  }

  capabilities(): RuntimeCapabilities {
    return { pauseToDisk: true, guestPhc: true, kvm: true };
  }

  async start(spec: GuestSpec, signal?: AbortSignal): Promise<GuestHandle> {
    const paths = this.#paths(spec);
    const log = this.#opts.logger.child({ sandboxId: spec.sandboxId, runtime: this.name });
    await this.#clearRunDir(spec, paths);
    let identity: ProcessIdentity | undefined;
    try {
      await this.#prepareJail(paths, signal);
      const hasInitrd = await exists(spec.initrdPath);
      if (paths.jailRoot !== undefined) {
        await linkOrCopy(spec.kernelPath, paths.kernel.host);
        if (hasInitrd) await linkOrCopy(spec.initrdPath, paths.initrd.host);
      }
      await this.#opts.exec("cp", ["--reflink=auto", "--sparse=always", spec.imageRootfsExt4, paths.disk.host], {
        ...(signal ? { signal } : {}),
        timeoutMs: 300_000,
      });
      await this.#ownForJail(paths, paths.disk.host);

      identity = await this.#spawn(spec, paths, signal);
      const client = await this.#loggingClient(paths, signal);
      await client.putBootSource({
        kernel_image_path: paths.kernel.vm,
        boot_args: guestKernelCmdline({
          guestIp: spec.network.guestIp,
          gatewayIp: spec.network.gatewayIp,
          prefixLength: spec.network.prefixLength,
          ...(this.#opts.extraKernelArgs ? { extra: this.#opts.extraKernelArgs } : {}),
        }),
        ...(hasInitrd ? { initrd_path: paths.initrd.vm } : {}),
      });
      await client.putDrive({
        drive_id: "rootfs",
        path_on_host: paths.disk.vm,
        is_root_device: true,
        is_read_only: false,
      });
      await client.putNetworkInterface({
        iface_id: "eth0",
        host_dev_name: spec.network.tapName,
        guest_mac: spec.network.guestMac,
      });
      await client.putMachineConfig({ vcpu_count: spec.vcpus, mem_size_mib: spec.memoryMb, smt: false });
      if (this.#opts.entropyDevice ?? true) await client.putEntropy({});
      signal?.throwIfAborted();
      await client.action("InstanceStart");
      log.info("firecracker started", { pid: identity.pid, jailed: paths.jailRoot !== undefined });
      return this.#handle(identity, paths);
    } catch (err) {
      await this.#abandon(identity, paths);
      await this.#removeDisk(paths);
      await this.#removeJail(paths);
      throw await this.#failure("START_FAILED", `starting Firecracker for sandbox ${spec.sandboxId}`, err, paths);
    }
  }

  async stop(spec: GuestSpec, handle: GuestHandle | undefined): Promise<void> {
    const paths = this.#paths(spec);
    const identity = handle !== undefined ? identityOf(handle) : await readPidFile(paths.pidFile);
    if (identity !== undefined) await killProcessGroup(identity, this.#opts.stopGraceMs ?? 5_000);
    await this.#removeRunFiles(paths);
    await this.#removeDisk(paths);
    await this.#removeJail(paths);
  }

  isAlive(handle: GuestHandle): Promise<boolean> {
    return isProcessAlive(identityOf(handle));
  }

  async freeze(spec: GuestSpec, handle: GuestHandle): Promise<void> {
    await this.#setVmState(spec, handle, "Paused");
  }

  async thaw(spec: GuestSpec, handle: GuestHandle): Promise<void> {
    await this.#setVmState(spec, handle, "Resumed");
  }

  async #setVmState(spec: GuestSpec, handle: GuestHandle, state: "Paused" | "Resumed"): Promise<void> {
    try {
      await this.#client(dataOf(handle).socketPath).setVmState(state);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      throw new FirecrackerRuntimeError("API_FAILED", `setting sandbox ${spec.sandboxId} to ${state}: ${message}`, {
        cause: err,
      });
    }
  }

  /**
   * Pauses the vCPUs, has Firecracker write a full snapshot, stops the process and moves the disk
   * next to the snapshot. Firecracker writes to `*.next` names first: after a resume, the old memory
   * file still backs the running guest's memory, so it is replaced only once that process is gone.
   * On a failure before the process is stopped the guest is resumed and the old snapshot is untouched.
   */
  async snapshot(spec: GuestSpec, handle: GuestHandle, snapshotDir: string): Promise<SnapshotInfo> {
    const paths = this.#paths(spec, snapshotDir);
    const client = this.#client(dataOf(handle).socketPath);
    await mkdir(snapshotDir, { recursive: true });
    await mkdir(paths.snapshotWork.host, { recursive: true });
    await this.#ownForJail(paths, paths.snapshotWork.host);
    const work = (name: string) => ({
      host: join(paths.snapshotWork.host, name),
      vm: join(paths.snapshotWork.vm, name),
    });
    const vmstate = work(vmstateNext);
    const memory = work(memoryNext);

    try {
      await client.setVmState("Paused");
      await client.createSnapshot({ snapshot_type: "Full", snapshot_path: vmstate.vm, mem_file_path: memory.vm });
    } catch (err) {
      await rm(vmstate.host, { force: true });
      await rm(memory.host, { force: true });
      try {
        await client.setVmState("Resumed");
      } catch (resumeErr) {
        this.#opts.logger.error("cannot resume the guest after a failed snapshot", {
          sandboxId: spec.sandboxId,
          error: resumeErr,
        });
      }
      throw await this.#failure("SNAPSHOT_FAILED", `snapshotting sandbox ${spec.sandboxId}`, err, paths);
    }

    try {
      // The snapshot is complete and Firecracker has flushed the disk: the process is no longer needed.
      await killProcessGroup(identityOf(handle), this.#opts.stopGraceMs ?? 5_000);
      // Renames within one filesystem; a failure here is reported as a failed snapshot.
      await moveFile(memory.host, join(snapshotDir, snapshotFiles.memory));
      await moveFile(vmstate.host, join(snapshotDir, snapshotFiles.vmstate));
      await moveFile(paths.disk.host, join(snapshotDir, snapshotFiles.disk));
      const meta = { sandboxId: spec.sandboxId, vcpus: spec.vcpus, memoryMb: spec.memoryMb, createdAt: new Date() };
      await writeFile(join(snapshotDir, snapshotFiles.meta), `${JSON.stringify(meta)}\n`);
      await this.#removeRunFiles(paths);
      await this.#removeJail(paths);
      return await describeSnapshot(snapshotDir);
    } catch (err) {
      throw await this.#failure("SNAPSHOT_FAILED", `saving the snapshot of sandbox ${spec.sandboxId}`, err, paths);
    }
  }

  /**
   * Copies a pause snapshot to `toDir` as a saved snapshot of its own (CreateSnapshot): memory hard-
   * linked (a later pause of the source writes new files and renames them in), vmstate and disk
   * copied, and a marker that makes restore() copy the disk out instead of moving it, so any number of
   * guests start from it. Only under the jailer: the vmstate records the disk's path as Firecracker saw
   * it, which is the same `/rootfs.ext4` in every jail but the source's own path without one.
   */
  async cloneSnapshot(fromDir: string, toDir: string): Promise<void> {
    if (this.#opts.jailer === undefined) {
      throw new FirecrackerRuntimeError(
        "SNAPSHOT_FAILED",
        "saved snapshots need Firecracker under its jailer (unjailed, the snapshot names the source's own disk path)",
      );
    }
    await mkdir(toDir, { recursive: true });
    await linkOrCopy(join(fromDir, snapshotFiles.memory), join(toDir, snapshotFiles.memory));
    await copyFile(join(fromDir, snapshotFiles.vmstate), join(toDir, snapshotFiles.vmstate));
    await copyFile(join(fromDir, snapshotFiles.meta), join(toDir, snapshotFiles.meta));
    await this.#opts.exec(
      "cp",
      ["--reflink=auto", "--sparse=always", join(fromDir, snapshotFiles.disk), join(toDir, snapshotFiles.disk)],
      { timeoutMs: 10 * 60_000 },
    );
    await writeFile(join(toDir, SAVED_SNAPSHOT_MARKER), "");
  }

  /**
   * Starts a fresh Firecracker in the slot's netns and loads the snapshot with `resume_vm`. The disk
   * goes back to the path recorded in the snapshot; if the load fails it returns to the snapshot
   * directory, so a failed resume loses nothing.
   */
  async restore(spec: GuestSpec, snapshotDir: string, signal?: AbortSignal): Promise<GuestHandle> {
    const paths = this.#paths(spec, snapshotDir);
    const snapshotDisk = join(snapshotDir, snapshotFiles.disk);
    const saved = await exists(join(snapshotDir, SAVED_SNAPSHOT_MARKER));
    const missing: string[] = [];
    for (const name of [snapshotFiles.vmstate, snapshotFiles.memory]) {
      if (!(await exists(join(snapshotDir, name)))) missing.push(name);
    }
    // A disk already back in the sandbox directory means an earlier resume stopped half-way: use it.
    if (!(await exists(snapshotDisk)) && !(await exists(paths.disk.host))) missing.push(snapshotFiles.disk);
    if (missing.length > 0) {
      throw new FirecrackerRuntimeError(
        "SNAPSHOT_MISSING",
        `cannot resume sandbox ${spec.sandboxId}: snapshot in ${snapshotDir} lacks ${missing.join(", ")}`,
      );
    }

    await this.#clearRunDir(spec, paths);
    let identity: ProcessIdentity | undefined;
    try {
      await this.#prepareJail(paths, signal);
      if (saved) {
        // A saved snapshot starts many guests: each gets its own copy of the disk.
        await this.#opts.exec("cp", ["--reflink=auto", "--sparse=always", snapshotDisk, paths.disk.host], {
          signal,
          timeoutMs: 10 * 60_000,
        });
      } else if (await exists(snapshotDisk)) await moveFile(snapshotDisk, paths.disk.host);
      await this.#ownForJail(paths, paths.disk.host);
      let vmstateVm = join(snapshotDir, snapshotFiles.vmstate);
      let memoryVm = join(snapshotDir, snapshotFiles.memory);
      if (paths.jailRoot !== undefined) {
        await mkdir(paths.snapshotWork.host, { recursive: true });
        for (const name of [snapshotFiles.vmstate, snapshotFiles.memory]) {
          await linkOrCopy(join(snapshotDir, name), join(paths.snapshotWork.host, name));
          await this.#ownForJail(paths, join(paths.snapshotWork.host, name));
        }
        vmstateVm = join(paths.snapshotWork.vm, snapshotFiles.vmstate);
        memoryVm = join(paths.snapshotWork.vm, snapshotFiles.memory);
      }

      identity = await this.#spawn(spec, paths, signal);
      const client = await this.#loggingClient(paths, signal);
      await client.loadSnapshot({
        snapshot_path: vmstateVm,
        mem_backend: { backend_type: "File", backend_path: memoryVm },
        resume_vm: true,
      });
      this.#opts.logger.info("firecracker resumed from snapshot", { sandboxId: spec.sandboxId, pid: identity.pid });
      return this.#handle(identity, paths);
    } catch (err) {
      await this.#abandon(identity, paths);
      if (saved) await rm(paths.disk.host, { force: true });
      else if (await exists(paths.disk.host)) await moveFile(paths.disk.host, snapshotDisk);
      await this.#removeJail(paths);
      // Firecracker answering 400 to the load means it read the files and rejected them.
      const rejected = err instanceof FirecrackerApiError && err.path === "/snapshot/load" && err.status === 400;
      const reason = rejected ? "SNAPSHOT_CORRUPT" : "RESTORE_FAILED";
      throw await this.#failure(reason, `resuming sandbox ${spec.sandboxId} from ${snapshotDir}`, err, paths);
    }
  }

  #paths(spec: GuestSpec, snapshotDir?: string): VmPaths {
    return vmPaths({
      sandboxId: spec.sandboxId,
      sandboxDir: spec.sandboxDir,
      kernelPath: spec.kernelPath,
      initrdPath: spec.initrdPath,
      ...(snapshotDir !== undefined ? { snapshotDir } : {}),
      ...(this.#opts.jailer !== undefined ? { jailedFirecrackerBin: this.#opts.firecrackerBin } : {}),
      ...(this.#opts.jailer?.chrootBaseDir !== undefined ? { chrootBaseDir: this.#opts.jailer.chrootBaseDir } : {}),
    });
  }

  #client(socketPath: string): FirecrackerApiClient {
    return new FirecrackerApiClient(socketPath, { timeoutMs: this.#opts.apiTimeoutMs ?? 60_000 });
  }

  /** A client of a just-spawned Firecracker, which logs (warnings and worse) to the sandbox's log file. */
  async #loggingClient(paths: VmPaths, signal: AbortSignal | undefined): Promise<FirecrackerApiClient> {
    const client = this.#client(paths.socket.host);
    await client.putLogger({ log_path: paths.log.vm, level: "Warning", show_level: true, show_log_origin: false });
    signal?.throwIfAborted();
    return client;
  }

  /** Starts Firecracker (jailed or not) with its log file ready, and waits for its API socket. */
  async #spawn(spec: GuestSpec, paths: VmPaths, signal: AbortSignal | undefined): Promise<ProcessIdentity> {
    await this.#touchLog(paths);
    const { jailer, seccomp } = this.#opts;
    const jailed = jailer !== undefined && paths.jailBase !== undefined && paths.jailRoot !== undefined;
    let filterVmPath: string | undefined;
    if (jailed && typeof seccomp === "object" && paths.jailRoot !== undefined) {
      // Firecracker reads the filter after the chroot, as the jailed user: a copy it may read.
      filterVmPath = "/seccomp.bpf";
      await copyFile(seccomp.filterFile, join(paths.jailRoot, filterVmPath));
      await this.#ownForJail(paths, join(paths.jailRoot, filterVmPath));
    }
    const argv =
      jailer !== undefined && paths.jailBase !== undefined
        ? jailerArgv({
            jailer,
            firecrackerBin: this.#opts.firecrackerBin,
            sandboxId: spec.sandboxId,
            jailBase: paths.jailBase,
            netns: spec.network.netns,
            socketVmPath: paths.socket.vm,
            vcpus: spec.vcpus,
            memoryMb: spec.memoryMb,
            firecrackerArgs: seccompArgs(seccomp, filterVmPath),
          })
        : [
            "ip",
            "netns",
            "exec",
            spec.network.netns,
            this.#opts.firecrackerBin,
            "--api-sock",
            paths.socket.host,
            ...seccompArgs(seccomp),
          ];
    // sun_path holds 108 bytes including the terminating NUL; a longer path cannot be connected to.
    if (Buffer.byteLength(paths.socket.host) > 107) {
      throw new Error(
        `the API socket path ${paths.socket.host} is longer than a unix socket allows (107 bytes); use a shorter AGENT_FILES_ROOTDIR or jailer chrootBaseDir`,
      );
    }
    const identity = await spawnDetached(argv, paths.consoleLog);
    await writeFile(paths.pidFile, `${JSON.stringify(identity)}\n`);
    await waitForApiSocket(paths.socket.host, {
      timeoutMs: this.#opts.socketTimeoutMs ?? 5_000,
      isProcessAlive: () => isProcessAlive(identity),
      ...(signal ? { signal } : {}),
    });
    return identity;
  }

  #handle(identity: ProcessIdentity, paths: VmPaths): GuestHandle {
    const data: FirecrackerHandleData = { socketPath: paths.socket.host, jailRoot: paths.jailRoot };
    return { runtime: this.name, pid: identity.pid, pidStartTime: identity.startTime, data: { ...data } };
  }

  /** The sandbox directory, without a previous run's API socket and pid file. */
  async #clearRunDir(spec: GuestSpec, paths: VmPaths): Promise<void> {
    await mkdir(spec.sandboxDir, { recursive: true });
    await this.#removeRunFiles(paths);
  }

  /** Makes the jail's root (under the jailer), unless the caller has given up already. */
  async #prepareJail(paths: VmPaths, signal: AbortSignal | undefined): Promise<void> {
    signal?.throwIfAborted();
    if (paths.jailRoot === undefined) return;
    await mkdir(paths.jailRoot, { recursive: true });
  }

  /** Under the jailer, Firecracker runs as the configured user and must own what it writes. */
  async #ownForJail(paths: VmPaths, path: string): Promise<void> {
    const { jailer } = this.#opts;
    if (jailer === undefined || paths.jailRoot === undefined) return;
    await chown(path, jailer.uid, jailer.gid);
  }

  async #touchLog(paths: VmPaths): Promise<void> {
    await writeFile(paths.log.host, "", { flag: "a" });
    await this.#ownForJail(paths, paths.log.host);
  }

  /** Kills a half-started process and removes its socket; used on every failed start or resume. */
  async #abandon(identity: ProcessIdentity | undefined, paths: VmPaths): Promise<void> {
    try {
      if (identity !== undefined) await killProcessGroup(identity, this.#opts.stopGraceMs ?? 5_000);
      await this.#removeRunFiles(paths);
    } catch (err) {
      this.#opts.logger.error("cleanup after a failed Firecracker start failed", { error: err });
    }
  }

  /** Removes this sandbox's jail, and the base too when it is the default one inside the sandbox directory. */
  async #removeJail(paths: VmPaths): Promise<void> {
    if (paths.jailDir === undefined || paths.jailBase === undefined) return;
    await rm(paths.jailDir, { recursive: true, force: true });
    if (this.#opts.jailer?.chrootBaseDir === undefined) await rm(paths.jailBase, { recursive: true, force: true });
  }

  async #removeRunFiles(paths: VmPaths): Promise<void> {
    await rm(paths.socket.host, { force: true });
    await rm(paths.pidFile, { force: true });
  }

  async #removeDisk(paths: VmPaths): Promise<void> {
    await rm(paths.disk.host, { force: true });
  }

  /** Wraps a failure with what was being done and the end of the console log, where Firecracker says why. */
  async #failure(
    reason: FirecrackerErrorReason,
    what: string,
    err: unknown,
    paths: VmPaths,
  ): Promise<FirecrackerRuntimeError> {
    const message = err instanceof Error ? err.message : String(err);
    const tail = (await logTail(paths.consoleLog, 1_500)).trim();
    return new FirecrackerRuntimeError(
      reason,
      `${what}: ${message}${tail ? `\n--- ${paths.consoleLog} (tail) ---\n${tail}` : ""}`,
      { cause: err },
    );
  }
}

function dataOf(handle: GuestHandle): FirecrackerHandleData {
  const { socketPath, jailRoot } = handle.data;
  if (handle.runtime !== "firecracker" || typeof socketPath !== "string") {
    throw new Error(`not a Firecracker guest handle: ${JSON.stringify(handle)}`);
  }
  return { socketPath, jailRoot: typeof jailRoot === "string" ? jailRoot : undefined };
}

function identityOf(handle: GuestHandle): ProcessIdentity {
  return { pid: handle.pid, startTime: handle.pidStartTime };
}

async function readPidFile(path: string): Promise<ProcessIdentity | undefined> {
  try {
    const parsed: unknown = JSON.parse(await readFile(path, "utf8"));
    if (typeof parsed !== "object" || parsed === null) return undefined;
    const { pid, startTime } = parsed as Record<string, unknown>;
    if (typeof pid !== "number" || typeof startTime !== "string") return undefined;
    return { pid, startTime };
  } catch {
    return undefined;
  }
}

async function describeSnapshot(dir: string): Promise<SnapshotInfo> {
  const files: SnapshotInfo["files"] = [];
  for (const name of [snapshotFiles.vmstate, snapshotFiles.memory, snapshotFiles.disk, snapshotFiles.meta]) {
    files.push({ name, sizeBytes: (await stat(join(dir, name))).size });
  }
  return { dir, files };
}
