/**
 * The seam between the sandbox manager and the isolation technologies (Firecracker, QEMU, Linux
 * namespaces). The manager owns ids, state, locks, network slots and the envd handshake; a runtime
 * only starts, stops, pauses and restores one guest whose network slot and files are already prepared.
 */

export type RuntimeName = "firecracker" | "qemu" | "gvisor" | "namespace";

/** How strongly a runtime separates a guest from the host kernel, strongest first. */
export type IsolationClass = "vm" | "gvisor" | "namespace";

/** The isolation class each runtime gives. */
export const ISOLATION_OF: Record<RuntimeName, IsolationClass> = {
  firecracker: "vm",
  qemu: "vm",
  gvisor: "gvisor",
  namespace: "namespace",
};

export interface RuntimeCapabilities {
  /** Pause writes memory and device state to disk and frees the guest's process (false: freeze in place). */
  pauseToDisk: boolean;
  /** The guest has a PTP clock device (/dev/ptp0) that chrony can follow after a resume. */
  guestPhc: boolean;
  /** Hardware virtualisation is used (KVM). */
  kvm: boolean;
}

/** The network slot a guest is attached to, prepared by the agent's slot allocator. */
export interface GuestNetwork {
  /** Network namespace the guest's process (VM) or processes (namespace runtime) run in. */
  netns: string;
  /** TAP device inside the netns that a VM attaches to (VM runtimes). */
  tapName: string;
  /** Guest address inside the netns, the same in every slot: 169.254.0.21. */
  guestIp: string;
  /** Gateway address inside the netns (the TAP's address): 169.254.0.22. */
  gatewayIp: string;
  /** Prefix length of the guest link: 30. */
  prefixLength: number;
  /** MAC address of the guest's eth0. */
  guestMac: string;
}

export interface GuestSpec {
  sandboxId: string;
  template: string;
  vcpus: number;
  memoryMb: number;
  /** Per-sandbox directory (sandboxes/<id>/): disks, sockets, console log, runtime state. */
  sandboxDir: string;
  network: GuestNetwork;
  /** Kernel, initramfs and template image paths, from the files layout. */
  kernelPath: string;
  initrdPath: string;
  /** A kernel with its drivers built in (booted with no initramfs), preferred by runtimes that can use it. */
  microvmKernelPath?: string;
  imageRootfsTree: string;
  imageRootfsExt4: string;
  /**
   * Files of a saved snapshot (a copy of the source guest's writable layer, owned by guest ids) that
   * this guest starts with, over the template tree. Runtimes with saveFiles() honour it in start().
   */
  snapshotLayer?: string;
}

/**
 * What a runtime persists about a running guest so that a restarted agent can re-adopt it
 * (kept in sandboxes/<id>/runtime.json by the manager). Runtime-specific fields go in `data`.
 */
export interface GuestHandle {
  runtime: RuntimeName;
  /** PID of the guest's root process on the host (QEMU or Firecracker process, or the namespace's init). */
  pid: number;
  /** Process start time (from /proc/<pid>/stat, field 22) so a recycled PID is not mistaken for the guest. */
  pidStartTime: string;
  data: Record<string, unknown>;
}

export interface SnapshotInfo {
  /** Directory holding the snapshot (snapshots/<id>/). */
  dir: string;
  files: { name: string; sizeBytes: number }[];
}

export interface Runtime {
  readonly name: RuntimeName;
  capabilities(): RuntimeCapabilities;
  /** Prepares the guest's disk and starts it, detached from the caller; resolves once the process runs. */
  start(spec: GuestSpec, signal?: AbortSignal): Promise<GuestHandle>;
  /** Stops the guest and removes what start() created under sandboxDir except logs; idempotent. */
  stop(spec: GuestSpec, handle: GuestHandle | undefined): Promise<void>;
  /** Whether the guest's process is still alive (used by restart recovery and the reaper). */
  isAlive(handle: GuestHandle): Promise<boolean>;
  /** Freezes the guest in place (no disk snapshot). */
  freeze(spec: GuestSpec, handle: GuestHandle): Promise<void>;
  thaw(spec: GuestSpec, handle: GuestHandle): Promise<void>;
  /** Writes a full snapshot to snapshotDir and stops the guest process. Only when pauseToDisk. */
  snapshot?(spec: GuestSpec, handle: GuestHandle, snapshotDir: string): Promise<SnapshotInfo>;
  /**
   * Ends the guest's processes but keeps its writable files (a filesystem-only pause); a later
   * start() with the same sandbox directory boots it afresh on them. Optional: without it a sandbox
   * cannot pause without memory.
   */
  halt?(spec: GuestSpec, handle: GuestHandle): Promise<void>;
  /**
   * Copies the guest's writable layer (its files, not its memory) into `dir` for a saved snapshot,
   * with owners as guest ids. A running guest is frozen meanwhile and runs on afterwards; a paused
   * one (frozen, or halted: no handle) stays as it is. New guests start on the copy through
   * GuestSpec.snapshotLayer. Runtimes whose snapshots keep memory use snapshot()/restore() instead.
   */
  saveFiles?(
    spec: GuestSpec,
    handle: GuestHandle | undefined,
    dir: string,
    options: { running: boolean },
  ): Promise<void>;
  /**
   * Copies a pause snapshot (snapshot()'s directory) to `toDir` as a saved snapshot that stands on its
   * own: it outlives the source sandbox and its pause directory, and restore() starts any number of
   * new guests from it. Only when pauseToDisk.
   */
  cloneSnapshot?(fromDir: string, toDir: string): Promise<void>;
  /** Starts the guest from a snapshot on the (possibly different) network slot in spec. Only when pauseToDisk. */
  restore?(spec: GuestSpec, snapshotDir: string, signal?: AbortSignal): Promise<GuestHandle>;
  /**
   * Hands a guest started ahead of demand (as `from`, with a placeholder id) to a sandbox: applies
   * `to`'s limits and identity (e.g. hostname). The guest's files stay where `from` put them, so paths
   * in the handle remain valid. Optional: the manager keeps warm guests only for runtimes that have it.
   */
  retarget?(from: GuestSpec, to: GuestSpec, handle: GuestHandle): Promise<GuestHandle>;
}
