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
 * has /proc and the host's /dev mounted into the tree (maintainer scripts need them) and, for network
 * steps, the host's resolv.conf bind-mounted over the image's. Those mounts die with the namespace, so
 * an interrupted build leaves no mounts behind and the image keeps its own (empty) resolv.conf.
 * Without `network`, the script also gets its own empty network namespace: `run` steps of templates
 * cannot reach anything.
 */
export async function inChroot(root: string, script: string, opts: ChrootOptions): Promise<string> {
  const setup = [
    'mount -t proc proc "$1/proc"',
    'mount --rbind /dev "$1/dev"',
    opts.network ? 'touch "$1/etc/resolv.conf" && mount --bind /etc/resolv.conf "$1/etc/resolv.conf"' : "true",
    'exec chroot "$1" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive /bin/sh -euc "$2"',
  ].join(" && ");
  const args = ["--mount", "--propagation", "private", "--fork", "--kill-child"];
  if (!opts.network) args.push("--net");
  args.push("/bin/sh", "-euc", setup, "sh", root, script);
  const { stdout } = await run("unshare", args, { signal: opts.signal, hint: opts.hint });
  return stdout;
}
