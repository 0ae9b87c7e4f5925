import { fileURLToPath } from "node:url";
import { namespaceSeccompFilterHex } from "./seccomp.js";

/**
 * The command line that starts a namespace guest: launcher.pl, run by root, which joins the sandbox's
 * cgroups and network namespace, maps the guest's uids 0..65535 onto an unprivileged host range in a
 * new user namespace, assembles the root (idmapped template tree + writable layer + overlay) in a
 * private mount namespace, and execs the first process as root of that user namespace in new pid, uts,
 * ipc and cgroup namespaces, with a reduced capability bounding set and the seccomp filter of
 * seccomp.ts. The agent's namespace runtime, the image verifier (`bootNamespaceGuest`) and the
 * wrenn-init test all launch guests with it, so what they test is what the agent runs.
 */

/** The standard PATH inside a guest. */
export const GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The guest's first process: wrenn-init, which checks the mounts and execs tini and envd. */
export const WRENN_INIT = ["/usr/local/bin/wrenn-init"] as const;

/** The launcher script (perl-base is on every Debian host; see its header for why not bubblewrap). */
export const LAUNCHER = fileURLToPath(new URL("./launcher.pl", import.meta.url));

/** How many guest uids and gids are mapped (0..65535, as in a normal Linux system). */
export const GUEST_ID_COUNT = 65536;

/**
 * Capabilities root of the sandbox keeps (Docker's default set), by number (linux/capability.h).
 * Dropped, among others: SYS_ADMIN (mounts, namespaces), MKNOD (a user namespace cannot use device
 * nodes anyway), NET_RAW and NET_ADMIN (the slot's netns belongs to the host's user namespace, so they
 * would not work there; ping uses ICMP datagram sockets through net.ipv4.ping_group_range instead),
 * SYS_PTRACE, DAC_READ_SEARCH, SYS_MODULE, SYS_TIME, SYS_BOOT, SYS_RAWIO, SYS_RESOURCE, BPF, PERFMON.
 */
export const GUEST_CAPABILITIES = {
  CHOWN: 0,
  DAC_OVERRIDE: 1,
  FOWNER: 3,
  FSETID: 4,
  KILL: 5,
  SETGID: 6,
  SETUID: 7,
  SETPCAP: 8,
  NET_BIND_SERVICE: 10,
  SYS_CHROOT: 18,
  AUDIT_WRITE: 29,
  SETFCAP: 31,
} as const;

/**
 * Per-netns sysctls the launcher sets in the slot's network namespace before the guest starts: guest
 * root has no capability in that netns (it belongs to the host's user namespace), so binding :80 and
 * ping must not need one.
 */
export const GUEST_NETNS_SYSCTLS: readonly [name: string, value: string][] = [
  ["net.ipv4.ip_unprivileged_port_start", "0"],
  ["net.ipv4.ping_group_range", "0 2147483647"],
];

/** What differs between one namespace guest launch and another. */
export interface NamespaceGuestLaunch {
  /** Network namespace (a name under /run/netns) the guest runs in. */
  netns: string;
  /** The template's root tree: the read-only lower layer (shown to the guest as owned by its root). */
  lower: string;
  /**
   * A directory only root can reach (the sandbox's own) where the launcher makes its mount points:
   * `lower` (the idmapped template tree) and `disk` (the writable layer's image).
   */
  mountsDir: string;
  /** The writable layer: an ext4 image (a disk quota), or upper and work directories on the host. */
  writable: { disk: string } | { upper: string; work: string };
  /** First host uid/gid of the guest's range: guest uid n is host uid idBase + n. */
  idBase: number;
  /** Hostname, and WRENN_SANDBOX_ID in the guest's environment. */
  sandboxId: string;
  /** cgroup directories (one per hierarchy) the launcher joins before anything else runs. */
  cgroupDirs?: readonly string[];
  /**
   * The address the host reaches the guest's ports at. With it, envd forwards services listening on
   * the guest's loopback there (the agent's slots DNAT to it); without it, nothing is forwarded (tools
   * that talk to envd from inside the netns).
   */
  guestIp?: string;
  /**
   * Whether the guest dies with the process that launched it. The agent's guests must outlive the
   * agent (restart recovery adopts them); a tool's or a test's guest must not outlive the tool.
   */
  dieWithParent: boolean;
  /** The guest's first process and its arguments; WRENN_INIT by default. */
  init?: readonly string[];
  /**
   * Whether the launcher writes "wrenn-launch: at <unix ms> <step>" lines to its stderr (the console
   * log): where a start's time goes, for the agent's debug log and the benchmark.
   */
  timing?: boolean;
}

/** The argv (`perl launcher.pl …`) that starts a namespace guest; run it as root. */
export function namespaceGuestCommand(launch: NamespaceGuestLaunch): [command: string, ...args: string[]] {
  const env: [string, string][] = [
    ["PATH", GUEST_PATH],
    ["HOME", "/root"],
    ["WRENN_RUNTIME", "namespace"],
    ["WRENN_INIT_MODE", "namespace"],
    ["WRENN_SANDBOX_ID", launch.sandboxId],
  ];
  if (launch.guestIp !== undefined) {
    env.push(["WRENN_GUEST_IP", launch.guestIp], ["WRENN_ENVD_ARGS", `--forward-address ${launch.guestIp}`]);
  }
  const writable =
    "disk" in launch.writable
      ? ["--disk", launch.writable.disk]
      : ["--upper", launch.writable.upper, "--work", launch.writable.work];
  return [
    "perl",
    LAUNCHER,
    ...(launch.cgroupDirs ?? []).flatMap((dir) => ["--cgroup", dir]),
    "--netns",
    launch.netns,
    ...GUEST_NETNS_SYSCTLS.flatMap(([name, value]) => ["--sysctl", name, value]),
    "--lower",
    launch.lower,
    "--mounts",
    launch.mountsDir,
    ...writable,
    "--id-base",
    String(launch.idBase),
    "--id-count",
    String(GUEST_ID_COUNT),
    "--hostname",
    launch.sandboxId,
    "--keep-cap",
    Object.values(GUEST_CAPABILITIES).join(","),
    "--seccomp",
    namespaceSeccompFilterHex(),
    ...(launch.dieWithParent ? ["--die-with-parent"] : []),
    ...(launch.timing ? ["--timing"] : []),
    ...env.flatMap(([name, value]) => ["--setenv", name, value]),
    "--",
    ...(launch.init ?? WRENN_INIT),
  ];
}
