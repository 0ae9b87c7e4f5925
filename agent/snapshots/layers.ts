import { chmod, lchown, lstat, mkdir, mkdtemp, readdir, rmdir } from "node:fs/promises";
import { join } from "node:path";
import type { Exec } from "../exec.js";

/**
 * File-level glue of snapshots on the runtimes whose guest root is an overlay over the template tree
 * (namespace, gVisor): copying an overlay's writable layer (an "upper" directory) with everything
 * overlayfs keeps there, and moving its files between uid ranges.
 *
 * An upper directory holds, besides files: whiteouts (character devices 0/0 for files deleted from the
 * template), opaque directories and redirects (`trusted.overlay.*` extended attributes). `cp -a`
 * run by root keeps all of them (mode, owners, times, device nodes, every xattr namespace root may
 * read), and keeps holes in sparse files.
 */

/** How long one copy of a layer may take before it counts as failed. */
const COPY_TIMEOUT_MS = 10 * 60_000;

/** Copies the contents of directory `from` into directory `to` (created if missing), overlay metadata and all. */
export async function copyLayer(exec: Exec, from: string, to: string, signal?: AbortSignal): Promise<void> {
  await mkdir(to, { recursive: true });
  await exec("cp", ["-a", "--sparse=always", "--no-target-directory", `${from}/.`, to], {
    signal,
    timeoutMs: COPY_TIMEOUT_MS,
  });
}

/**
 * Moves every owner and group in `root` (the tree itself included) that lies in [from, from + count)
 * by `to - from`: a namespace guest's files belong to its own host uid range, and a snapshot keeps
 * them as guest ids (0-based) so that any later sandbox can take them into its range.
 * Set-user-id and set-group-id bits are put back after the chown; file capabilities (an xattr that
 * chown clears) are not.
 */
export async function shiftOwners(root: string, from: number, to: number, count: number): Promise<void> {
  if (from === to) return;
  const move = (id: number) => (id >= from && id < from + count ? id - from + to : id);
  const visit = async (path: string): Promise<void> => {
    const st = await lstat(path);
    const uid = move(st.uid);
    const gid = move(st.gid);
    if (uid !== st.uid || gid !== st.gid) {
      await lchown(path, uid, gid);
      // chown clears set-user-id and set-group-id bits; the guest's own (sudo installed by apt) stay.
      if (!st.isSymbolicLink() && (st.mode & 0o6000) !== 0) await chmod(path, st.mode & 0o7777);
    }
    if (st.isDirectory()) {
      for (const name of await readdir(path)) await visit(join(path, name));
    }
  };
  await visit(root);
}

/**
 * Mounts an ext4 image (loop) on a private temporary directory under `scratchDir` for the time of
 * `use`, then unmounts it (lazily if something still holds it) and removes the directory.
 */
export async function withImageMounted<T>(
  exec: Exec,
  image: string,
  scratchDir: string,
  use: (mountPoint: string) => Promise<T>,
  options: { readOnly?: boolean } = {},
): Promise<T> {
  await mkdir(scratchDir, { recursive: true, mode: 0o700 });
  const mountPoint = await mkdtemp(join(scratchDir, "mnt-"));
  try {
    const flags = `loop,nodev,nosuid${options.readOnly ? ",ro" : ""}`;
    await exec("mount", ["-o", flags, image, mountPoint]);
    try {
      return await use(mountPoint);
    } finally {
      const umount = await exec("umount", [mountPoint], { allowFailure: true });
      if (umount.exitCode !== 0) await exec("umount", ["-l", mountPoint], { allowFailure: true });
    }
  } finally {
    await rmdir(mountPoint).catch(() => {});
  }
}
