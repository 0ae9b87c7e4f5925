import { basename, join } from "node:path";

/**
 * Where each file of one Firecracker VM lives, seen from the host and seen from the Firecracker
 * process. Without the jailer both views are the same absolute paths under the sandbox directory.
 * Under the jailer, Firecracker is chrooted into `<sandboxDir>/jail/<exec name>/<id>/root`, so every
 * path it is given is relative to that root, and every file it uses must be placed inside it.
 */
export interface VmPaths {
  /** Chroot directory on the host when jailed; undefined otherwise. */
  jailRoot: string | undefined;
  /** Directory the jailer builds its chroots under (`--chroot-base-dir`); undefined when not jailed. */
  jailBase: string | undefined;
  /** This sandbox's part of the jail (`<base>/<exec name>/<id>`), removed on stop; undefined when not jailed. */
  jailDir: string | undefined;
  socket: HostAndVm;
  disk: HostAndVm;
  kernel: HostAndVm;
  initrd: HostAndVm;
  /** Firecracker's own log (the `PUT /logger` target). */
  log: HostAndVm;
  /** Where Firecracker writes a new snapshot before the runtime moves it into the snapshot directory. */
  snapshotWork: HostAndVm;
  /** Guest console and Firecracker's stdout/stderr; written by the host, never seen by Firecracker. */
  consoleLog: string;
  /** PID and start time of the running process, so stop() finds it even without a handle. */
  pidFile: string;
}

export interface HostAndVm {
  host: string;
  vm: string;
}

/** Files of a snapshot directory (snapshots/<id>/). */
export const snapshotFiles = {
  vmstate: "vmstate",
  memory: "memory",
  disk: "rootfs.ext4",
  meta: "firecracker-snapshot.json",
} as const;

export interface PathsInput {
  sandboxId: string;
  sandboxDir: string;
  kernelPath: string;
  initrdPath: string;
  /** Snapshot directory, used as the snapshot work directory when not jailed. */
  snapshotDir?: string;
  /** Path of the firecracker binary the jailer execs; its file name names the chroot's parent. */
  jailedFirecrackerBin?: string;
  /** The jailer's `--chroot-base-dir`; default `<sandboxDir>/jail`. */
  chrootBaseDir?: string;
}

export function vmPaths(input: PathsInput): VmPaths {
  const { sandboxDir } = input;
  const consoleLog = join(sandboxDir, "console.log");
  const pidFile = join(sandboxDir, "firecracker.pid");
  if (input.jailedFirecrackerBin === undefined) {
    const same = (path: string): HostAndVm => ({ host: path, vm: path });
    const work = input.snapshotDir ?? join(sandboxDir, "snapshot-work");
    return {
      jailRoot: undefined,
      jailBase: undefined,
      jailDir: undefined,
      socket: same(join(sandboxDir, "fc.sock")),
      disk: same(join(sandboxDir, "rootfs.ext4")),
      kernel: same(input.kernelPath),
      initrd: same(input.initrdPath),
      log: same(join(sandboxDir, "firecracker.log")),
      snapshotWork: same(work),
      consoleLog,
      pidFile,
    };
  }
  const jailBase = input.chrootBaseDir ?? join(sandboxDir, "jail");
  const jailDir = join(jailBase, basename(input.jailedFirecrackerBin), input.sandboxId);
  const jailRoot = join(jailDir, "root");
  const inJail = (vmPath: string): HostAndVm => ({ host: join(jailRoot, vmPath), vm: vmPath });
  return {
    jailRoot,
    jailBase,
    jailDir,
    socket: inJail("/fc.sock"),
    disk: inJail("/rootfs.ext4"),
    kernel: inJail("/vmlinux"),
    initrd: inJail("/initrd"),
    log: inJail("/firecracker.log"),
    snapshotWork: inJail("/snapshot"),
    consoleLog,
    pidFile,
  };
}

/** Settings for running Firecracker under its jailer (chroot, privilege drop, own mount namespace, cgroup). */
export interface JailerOptions {
  /** Path of the `jailer` binary. */
  jailerBin: string;
  /** User and group Firecracker drops to; they must own the disk and snapshot files. */
  uid: number;
  gid: number;
  /** cgroup version of the host (default 2; the limits below are written in v2 files). */
  cgroupVersion?: 1 | 2;
  /**
   * cgroup the jailer creates each VM's own cgroup under (`--parent-cgroup`, default
   * `wrenn-firecracker`); the cpu and memory controllers must be available there.
   */
  parentCgroup?: string;
  /** Cap each VM's cgroup at its vCPUs (`cpu.max`) and its memory plus headroom (`memory.max`); default true. */
  cgroupLimits?: boolean;
  /**
   * The jailer's `--chroot-base-dir` (default `<sandboxDir>/jail`). The API socket's host path runs
   * through it twice-nested with the sandbox id and must stay under 108 bytes, so a deep
   * AGENT_FILES_ROOTDIR needs a short base here, such as /srv/jailer.
   */
  chrootBaseDir?: string;
}

/** How Firecracker's own seccomp filter is set: its built-in one, none, or a compiled filter file. */
export type SeccompSetting = "default" | "off" | { filterFile: string };

/** Memory a VM's cgroup allows beyond the guest's RAM: the VMM's own heap, device queues, page tables. */
export const VMM_MEMORY_HEADROOM_MIB = 128;

/** Firecracker's arguments for a seccomp setting; `filterPath` is where Firecracker sees the filter file. */
export function seccompArgs(setting: SeccompSetting | undefined, filterPath?: string): string[] {
  if (setting === undefined || setting === "default") return [];
  if (setting === "off") return ["--no-seccomp"];
  return ["--seccomp-filter", filterPath ?? setting.filterFile];
}

/**
 * The jailer's command line for one sandbox. `--daemonize` is not used: the runtime already starts
 * the jailer in a new session, and the jailer refuses to daemonize when it leads its process group.
 * The jailer joins the sandbox's netns itself, so no `ip netns exec` wraps it.
 */
export function jailerArgv(opts: {
  jailer: JailerOptions;
  firecrackerBin: string;
  sandboxId: string;
  jailBase: string;
  netns: string;
  socketVmPath: string;
  vcpus: number;
  memoryMb: number;
  /** Arguments for Firecracker after `--`, besides the API socket (seccomp). */
  firecrackerArgs?: string[];
}): string[] {
  const { jailer } = opts;
  const argv = [
    jailer.jailerBin,
    "--id",
    opts.sandboxId,
    "--exec-file",
    opts.firecrackerBin,
    "--uid",
    String(jailer.uid),
    "--gid",
    String(jailer.gid),
    "--chroot-base-dir",
    opts.jailBase,
    "--netns",
    `/var/run/netns/${opts.netns}`,
  ];
  if (jailer.cgroupLimits ?? true) {
    const version = jailer.cgroupVersion ?? 2;
    argv.push("--cgroup-version", String(version), "--parent-cgroup", jailer.parentCgroup ?? "wrenn-firecracker");
    const memoryBytes = (opts.memoryMb + VMM_MEMORY_HEADROOM_MIB) * 1024 * 1024;
    const periodUs = 100_000;
    if (version === 2) {
      argv.push("--cgroup", `memory.max=${memoryBytes}`, "--cgroup", `cpu.max=${opts.vcpus * periodUs} ${periodUs}`);
    } else {
      argv.push(
        "--cgroup",
        `memory.limit_in_bytes=${memoryBytes}`,
        "--cgroup",
        `cpu.cfs_period_us=${periodUs}`,
        "--cgroup",
        `cpu.cfs_quota_us=${opts.vcpus * periodUs}`,
      );
    }
  } else if (jailer.cgroupVersion !== undefined) {
    argv.push("--cgroup-version", String(jailer.cgroupVersion));
  }
  argv.push("--", "--api-sock", opts.socketVmPath, ...(opts.firecrackerArgs ?? []));
  return argv;
}
