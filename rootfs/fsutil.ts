import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, mkdir, readdir, readlink, rename, rm, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";

/** sha256 (hex) of strings and buffers, fed in order; used for cache keys. */
export function hashParts(parts: readonly (string | Uint8Array)[]): string {
  const h = createHash("sha256");
  for (const p of parts) {
    h.update(typeof p === "string" ? Buffer.from(p) : p);
    h.update("\0");
  }
  return h.digest("hex");
}

/** sha256 (hex) of a file's contents, streamed. */
export async function hashFile(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/**
 * sha256 of a directory tree: relative paths, types, modes, symlink targets and file contents, in
 * sorted order, so the same tree always hashes the same and any change to it changes the hash.
 */
export async function hashTree(root: string): Promise<string> {
  const h = createHash("sha256");
  const walk = async (rel: string): Promise<void> => {
    const entries = (await readdir(join(root, rel), { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : 1,
    );
    for (const entry of entries) {
      const relPath = rel ? `${rel}/${entry.name}` : entry.name;
      const abs = join(root, relPath);
      const st = await lstat(abs);
      h.update(`${relPath}\0${st.mode.toString(8)}\0`);
      if (entry.isSymbolicLink()) h.update(`-> ${await readlink(abs)}\0`);
      else if (entry.isDirectory()) await walk(relPath);
      else if (entry.isFile()) h.update(`${await hashFile(abs)}\0`);
    }
  };
  await walk("");
  return h.digest("hex");
}

/** A fresh unique name for a temporary sibling of `path` (same directory, so a rename is atomic). */
export function tempSibling(path: string, tag = "tmp"): string {
  return join(dirname(path), `.${tag}-${randomBytes(6).toString("hex")}`);
}

/** Writes a file atomically: to a temporary sibling, then renamed over the target. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = tempSibling(path, "write");
  await writeFile(tmp, data, { mode });
  await rename(tmp, path);
}

/** Points `link` at `target` atomically (a new symlink renamed over the old one). */
export async function replaceSymlink(link: string, target: string): Promise<void> {
  await mkdir(dirname(link), { recursive: true });
  const tmp = tempSibling(link, "link");
  await symlink(target, tmp);
  try {
    await rename(tmp, link);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Whether a path exists (without following a final symlink). */
export async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}
