import { run } from "./run.js";

/** Options for {@link inChroot}. */
export interface ChrootOptions {
  /** Allow network access (apt steps reaching the Debian mirror). Without it the command runs in an empty netns. */
  network: boolean;
  signal?: AbortSignal | undefined;
  hint?: string;
}

/**
 * Runs a shell script as root inside an image tree. The script runs in a private mount namespace that
 * has its own /proc and a minimal /dev mounted into the tree (maintainer scripts need them) and, for network
 * steps, a private copy of the host's resolv.conf bind-mounted over the image's. Those mounts die with
 * the namespace, so an interrupted build leaves no mounts behind and the image keeps its own (empty)
 * resolv.conf; nothing the script does can write to the host's files through them.
 * Without `network`, the script also gets its own empty network namespace: `run` steps of templates
 * cannot reach anything.
 */
export async function inChroot(root: string, script: string, opts: ChrootOptions): Promise<string> {
  const setup = [
    'mount -t proc proc "$1/proc"',
    // A minimal /dev of bind-mounted host nodes, not the host's whole /dev: a maintainer script that
    // removes or creates device nodes then cannot touch the host's.
    'mount -t tmpfs -o mode=0755,nosuid tmpfs "$1/dev"',
    'for n in null zero full random urandom tty; do touch "$1/dev/$n" && mount --bind "/dev/$n" "$1/dev/$n" || exit 1; done',
    'mkdir -p "$1/dev/pts" "$1/dev/shm" && ln -s /proc/self/fd "$1/dev/fd"',
    // A private copy of the host's resolv.conf, never the host's file itself: image cleanup steps truncate
    // /etc/resolv.conf, which through a bind mount of the host's file would empty the host's DNS config.
    // The copy is world-readable (apt fetches as _apt) and unlinked once mounted; the mount keeps it alive. A symlink in the
    // image is replaced first, because following it would resolve against the host's root.
    opts.network
      ? 'resolv=$(mktemp) && cat /etc/resolv.conf > "$resolv" && chmod 0644 "$resolv" && { [ ! -L "$1/etc/resolv.conf" ] || rm -f "$1/etc/resolv.conf"; } && touch "$1/etc/resolv.conf" && mount --bind "$resolv" "$1/etc/resolv.conf" && rm -f "$resolv"'
      : "true",
    'exec chroot "$1" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive /bin/sh -euc "$2"',
  ].join(" && ");
  // New pid, uts and ipc namespaces too: the /proc the script sees lists only its own processes.
  const args = ["--mount", "--propagation", "private", "--pid", "--uts", "--ipc", "--fork", "--kill-child"];
  if (!opts.network) args.push("--net");
  args.push("/bin/sh", "-euc", setup, "sh", root, script);
  const { stdout } = await run("unshare", args, { signal: opts.signal, hint: opts.hint });
  return stdout;
}
