import { GUEST_PATH, WRENN_INIT } from "../namespace/launch.js";

/**
 * The OCI bundle (config.json) and runsc command lines of a gVisor guest. Pure, so the unit tests
 * read exactly what the runtime runs.
 */

/**
 * Capabilities the guest's processes hold inside gVisor: Docker's default set. They are checked by
 * gVisor's kernel (the Sentry), never by the host's. envd needs SETUID/SETGID/CHOWN/DAC_OVERRIDE/FOWNER
 * to run commands and write files as the sandbox's user, sudo needs SETUID/SETGID/AUDIT_WRITE.
 * NET_RAW is listed but runsc removes it unless started with --net-raw, so no raw sockets.
 * No SYS_ADMIN: a mount inside gVisor would stay inside, but there is no reason to offer it.
 */
export const GUEST_CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
] as const;

export interface GvisorBundleInput {
  /** The guest's root tree (the overlay of the template), an absolute path. */
  rootfs: string;
  /** Hostname, and WRENN_SANDBOX_ID in the guest's environment. */
  sandboxId: string;
  /** The address the host reaches the guest at (envd forwards loopback services there). */
  guestIp?: string;
  /** The guest's first process; wrenn-init by default. */
  init?: readonly string[];
}

/** The OCI runtime spec of a guest: wrenn-init as the first process, the overlay as a writable root. */
export function gvisorBundleConfig(input: GvisorBundleInput): Record<string, unknown> {
  const env = [
    `PATH=${GUEST_PATH}`,
    "HOME=/root",
    "WRENN_RUNTIME=gvisor",
    // wrenn-init's namespace mode: the runtime mounted /proc, /dev and /sys, owns the network and the
    // cgroups, and the clock is never touched (gVisor's clock follows the host's).
    "WRENN_INIT_MODE=namespace",
    `WRENN_SANDBOX_ID=${input.sandboxId}`,
  ];
  if (input.guestIp !== undefined) {
    env.push(`WRENN_GUEST_IP=${input.guestIp}`, `WRENN_ENVD_ARGS=--forward-address ${input.guestIp}`);
  }
  const caps = [...GUEST_CAPABILITIES];
  return {
    ociVersion: "1.0.0",
    process: {
      user: { uid: 0, gid: 0 },
      args: [...(input.init ?? WRENN_INIT)],
      env,
      cwd: "/",
      capabilities: { bounding: caps, effective: caps, permitted: caps, inheritable: [] },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1_048_576, soft: 1_048_576 }],
      noNewPrivileges: false,
    },
    root: { path: input.rootfs, readonly: false },
    hostname: input.sandboxId,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "mode=755"] },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      { destination: "/run", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=755"] },
    ],
    // No network namespace entry: runsc runs with --network=host inside the slot's netns (see runtime.ts).
    linux: { namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }] },
  };
}

export interface RunscGlobals {
  /** runsc's state directory for this guest (container state files). */
  stateDir: string;
}

/**
 * Global runsc flags. ptrace: the only platform without KVM in this build (no systrap). network=host:
 * the guest's sockets are host sockets inside the slot's netns, so the slot's nft rules apply to them
 * (gVisor's own netstack would take the interface over through a packet socket and bypass them; it
 * also refuses to start on kernels where /proc/sys/net/core/rmem_default exists in every netns).
 * ignore-cgroups: the agent places the sandbox in its own cgroups (runsc cannot use hybrid hierarchies).
 * overlay2=none: writes go to the agent's overlay on disk, not to sandbox memory.
 */
export function runscGlobalArgs(globals: RunscGlobals): string[] {
  return [`--root=${globals.stateDir}`, "--platform=ptrace", "--network=host", "--ignore-cgroups", "--overlay2=none"];
}
