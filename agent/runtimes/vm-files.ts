import { constants } from "node:fs";
import { access, copyFile, link, rename, rm, writeFile } from "node:fs/promises";

/**
 * File moves of the VM runtimes (Firecracker, QEMU): disks, memory files and manifests that move
 * between a sandbox's directory and its snapshot directory, which may sit on different filesystems.
 * Every helper leaves the destination either absent (or as it was) or complete, never half-written: a
 * copy goes to `<to>.partial` first and is renamed into place, so a crash or a full disk mid-copy
 * cannot leave a truncated file under the real name for a resume to load.
 */

/** Suffix of a file being written; never a name a runtime loads. */
export const PARTIAL_SUFFIX = ".partial";

export async function exists(path: string): Promise<boolean> {
  try {
    await access(path, constants.F_OK);
    return true;
  } catch {
    return false;
  }
}

/** Copies `from` to `to` through a partial file (a reflink where the filesystem can: no data copied). */
export async function copyFileAtomic(from: string, to: string): Promise<void> {
  const partial = `${to}${PARTIAL_SUFFIX}`;
  try {
    await copyFile(from, partial, constants.COPYFILE_FICLONE);
    await rename(partial, to);
  } catch (err) {
    await rm(partial, { force: true });
    throw err;
  }
}

/** Writes `data` to `path` through a partial file, so readers see the old content or the whole new one. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode?: number): Promise<void> {
  const partial = `${path}${PARTIAL_SUFFIX}`;
  try {
    await writeFile(partial, data, mode === undefined ? {} : { mode });
    await rename(partial, path);
  } catch (err) {
    await rm(partial, { force: true });
    throw err;
  }
}

/**
 * Moves a file: rename(2) within a filesystem; across filesystems (EXDEV) an atomic copy, then the
 * source is removed. The source stays until the destination is complete.
 */
export async function moveFile(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
    await copyFileAtomic(from, to);
    await rm(from, { force: true });
  }
}

/**
 * Hard-links `target` at `link` (replacing an older link) and returns the link; when that is not
 * possible (another filesystem, or links refused) returns `target` itself, which then must not go away.
 */
export async function linkOrReference(target: string, linkPath: string): Promise<string> {
  if (target === linkPath) return linkPath;
  await rm(linkPath, { force: true });
  try {
    await link(target, linkPath);
    return linkPath;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EXDEV" || code === "EPERM" || code === "EMLINK") return target;
    throw err;
  }
}

/** A hard link (no copy of a large file) when both paths share a filesystem, an atomic copy otherwise. */
export async function linkOrCopy(from: string, to: string): Promise<void> {
  await rm(to, { force: true });
  try {
    await link(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
    await copyFileAtomic(from, to);
  }
}
