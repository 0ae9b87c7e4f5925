/**
 * The command line that starts a namespace guest: `ip netns exec` into the guest's network namespace,
 * then bubblewrap with the overlay as `/` and new pid, ipc, uts (and, where the kernel allows, cgroup)
 * namespaces. The agent's namespace runtime, the image verifier (`bootNamespaceGuest`) and the
 * wrenn-init test all launch guests with it, so what they test is what the agent runs.
 */

/** The standard PATH inside a guest. */
export const GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The guest's first process: wrenn-init, which mounts what is missing and execs tini and envd. */
export const WRENN_INIT = ["/usr/local/bin/wrenn-init"] as const;

/** What differs between one namespace guest launch and another. */
export interface NamespaceGuestLaunch {
  /** Network namespace the guest runs in (it must exist). */
  netns: string;
  /** The guest's root tree (an overlay of the image), bound as `/`. */
  rootfs: string;
  /** Hostname, and WRENN_SANDBOX_ID in the guest's environment. */
  sandboxId: string;
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
}

/** The argv (`ip netns exec <netns> bwrap …`) that starts a namespace guest. */
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
  return [
    "ip",
    "netns",
    "exec",
    launch.netns,
    "bwrap",
    "--bind",
    launch.rootfs,
    "/",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    // `ip netns exec` mounted a /sys of the guest's netns; the guest sees it read-only.
    "--ro-bind",
    "/sys",
    "/sys",
    "--tmpfs",
    "/run",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--hostname",
    launch.sandboxId,
    // Its own session: a guest process cannot push input into the launcher's terminal (TIOCSTI).
    "--new-session",
    ...(launch.dieWithParent ? ["--die-with-parent"] : []),
    "--clearenv",
    ...env.flatMap(([name, value]) => ["--setenv", name, value]),
    "--",
    ...(launch.init ?? WRENN_INIT),
  ];
}
