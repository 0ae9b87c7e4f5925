import { dirname, join } from "node:path";
import type { Exec } from "../../exec.js";
import type { Logger } from "../../logger.js";
import { isSameProcessAlive } from "../../process-identity.js";
import type { GuestHandle, GuestSpec } from "../types.js";
import { type CgroupLayout, detectCgroupLayout, type SandboxCgroups, sandboxCgroups, setFrozen } from "./cgroups.js";
import { DEFAULT_DISK_QUOTA_MB, DiskPool } from "./disks.js";

/** What every runtime whose guest is a tree of host processes in cgroups is built with. */
export interface CgroupGuestDeps {
  exec: Exec;
  logger: Logger;
  /** Parent cgroup name, unique per agent (e.g. wrenn-<net prefix>). */
  cgroupGroup: string;
  /** Injected for tests; detected from /sys/fs/cgroup by default. */
  cgroupLayout?: CgroupLayout;
  /** Size of each sandbox's writable layer (an ext4 image); 0: no quota (the layer shares the host's disk). */
  diskQuotaMb?: number;
  /** Where formatted disk images wait (default: <runtime>-disks/ next to the sandboxes directory). */
  diskPoolDir?: string;
}

/**
 * The part the namespace and gVisor runtimes share: their guest is a tree of host processes held in
 * the sandbox's cgroups, with its writable layer on a disk image from a pool. The cgroup layout is
 * detected once; pausing freezes the cgroups in place; a guest is alive while its first process is
 * (the same process: a recycled PID does not count). How a guest starts and what its handle holds
 * stays with each runtime.
 */
export abstract class CgroupGuestRuntime {
  readonly #deps: CgroupGuestDeps;
  /** The disk pool's directory name next to the sandboxes directory (namespace-disks, gvisor-disks). */
  readonly #diskPoolName: string;
  #layout: CgroupLayout | undefined;
  #disks: DiskPool | undefined;

  protected constructor(deps: CgroupGuestDeps, diskPoolName: string) {
    this.#deps = deps;
    this.#diskPoolName = diskPoolName;
    this.#layout = deps.cgroupLayout;
  }

  /** The cgroups a handle's runtime-specific data names. */
  protected abstract cgroupsOf(handle: GuestHandle): SandboxCgroups;

  protected async cgroupLayout(): Promise<CgroupLayout> {
    this.#layout ??= await detectCgroupLayout();
    return this.#layout;
  }

  /** The cgroups sandbox `spec` gets (or has, when no handle recorded them). */
  protected async sandboxCgroups(spec: GuestSpec): Promise<SandboxCgroups> {
    return sandboxCgroups(await this.cgroupLayout(), this.#deps.cgroupGroup, spec.sandboxId);
  }

  protected get diskQuotaMb(): number {
    return this.#deps.diskQuotaMb ?? DEFAULT_DISK_QUOTA_MB;
  }

  protected diskPool(spec: GuestSpec): DiskPool {
    this.#disks ??= new DiskPool({
      exec: this.#deps.exec,
      logger: this.#deps.logger,
      dir: this.#deps.diskPoolDir ?? join(dirname(dirname(spec.sandboxDir)), this.#diskPoolName),
    });
    return this.#disks;
  }

  /** SIGKILLs the guest's first process if it is still the one the handle names. */
  protected async killGuestProcess(handle: GuestHandle | undefined): Promise<void> {
    if (handle && (await isSameProcessAlive(handle.pid, handle.pidStartTime))) {
      try {
        process.kill(handle.pid, "SIGKILL");
      } catch {
        // Gone meanwhile.
      }
    }
  }

  async isAlive(handle: GuestHandle): Promise<boolean> {
    return isSameProcessAlive(handle.pid, handle.pidStartTime);
  }

  /** Freezes every process of the guest through the cgroup freezer. */
  async freeze(_spec: GuestSpec, handle: GuestHandle): Promise<void> {
    await setFrozen(this.cgroupsOf(handle), true);
  }

  async thaw(_spec: GuestSpec, handle: GuestHandle): Promise<void> {
    await setFrozen(this.cgroupsOf(handle), false);
  }
}
