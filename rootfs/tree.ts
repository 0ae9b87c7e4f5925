import { chmod, lchown, lstat, mkdir, readdir, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { basename, join, posix } from "node:path";
import { BuildError } from "./errors.js";
import { run } from "./run.js";

/**
 * File operations inside an untrusted root tree (an unpacked container image) from the host, as root.
 *
 * A path in such a tree means what it means to a process chrooted there: an absolute symlink
 * (`/usr/local/bin -> /etc`) points into the tree, and `..` stops at its root. Following such a link on
 * the host (join(tree, "usr/local/bin/x")) would write the host's /etc. Every function here resolves
 * the path component by component, links included, clamped to the tree, the way a kernel with
 * RESOLVE_IN_ROOT does, so nothing is ever read or written outside the tree. Nothing else runs in the
 * tree while the builder works on it (no guest code runs on the host), so a resolved path stays valid.
 */

/** Symlinks followed per path before giving up, like the kernel's ELOOP limit. */
const MAX_LINKS = 40;

/**
 * The host path of `path` inside `root`: every symlink on the way followed within the tree (the last
 * component's only when `followFinal`), `..` clamped at the root. Components that do not exist yet
 * are kept as named, so the result can be created.
 */
export async function resolveInTree(root: string, path: string, followFinal = true): Promise<string> {
  const pending = path.split("/").filter((p) => p !== "" && p !== ".");
  let resolved: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const component = pending.shift() as string;
    if (component === "..") {
      resolved.pop();
      continue;
    }
    const host = join(root, ...resolved, component);
    const st = await lstat(host).catch(() => undefined);
    if (st?.isSymbolicLink() && (pending.length > 0 || followFinal)) {
      if (++links > MAX_LINKS) throw new BuildError(`too many levels of symbolic links resolving ${path} in the image`);
      const target = await readlink(host);
      if (target.startsWith("/")) resolved = [];
      pending.unshift(...target.split("/").filter((p) => p !== "" && p !== "."));
      continue;
    }
    resolved.push(component);
  }
  return join(root, ...resolved);
}

/** Creates a directory (and its parents) in the tree; returns its host path. */
export async function mkdirInTree(root: string, path: string, mode = 0o755): Promise<string> {
  const host = await resolveInTree(root, path);
  // Every existing component of `host` is a real directory (links were resolved), so mkdir -p creates
  // only the missing ones, under the tree.
  await mkdir(host, { recursive: true, mode });
  const st = await lstat(host);
  if (!st.isDirectory()) throw new BuildError(`${path} in the image is not a directory`);
  return host;
}

/** Host path for a new entry at `path`: its directory resolved (and made), whatever is there removed. */
async function freshEntry(root: string, path: string): Promise<string> {
  const dir = await mkdirInTree(root, posix.dirname(path));
  const host = join(dir, basename(path));
  // rm of a symlink removes the link, never what it points to.
  await rm(host, { recursive: true, force: true });
  return host;
}

/** Writes a regular file at `path` in the tree (replacing whatever is there, a link included). */
export async function writeFileInTree(
  root: string,
  path: string,
  data: string | Uint8Array,
  opts: { mode?: number; uid?: number; gid?: number } = {},
): Promise<string> {
  const host = await freshEntry(root, path);
  const mode = opts.mode ?? 0o644;
  // wx: O_CREAT|O_EXCL never follows a link that might have appeared at the name.
  await writeFile(host, data, { flag: "wx", mode });
  await chmod(host, mode);
  if (opts.uid !== undefined) await lchown(host, opts.uid, opts.gid ?? opts.uid);
  return host;
}

/** Makes `path` in the tree a symlink to `target` (replacing whatever is there). */
export async function symlinkInTree(root: string, path: string, target: string): Promise<void> {
  await symlink(target, await freshEntry(root, path));
}

/** Copies a host directory to `path` in the tree (replacing whatever is there), owned by root. */
export async function copyDirInTree(root: string, source: string, path: string, signal?: AbortSignal): Promise<void> {
  const host = await freshEntry(root, path);
  await run("cp", ["-a", "--no-preserve=ownership", source, host], { signal });
}

/** Copies a host file to `path` in the tree (replacing whatever is there), root-owned with `mode`. */
export async function copyFileInTree(root: string, source: string, path: string, mode: number): Promise<void> {
  await writeFileInTree(root, path, await readFile(source), { mode });
}

/** Reads a regular file of the tree, or undefined when there is none; refuses anything over `maxBytes`. */
export async function readFileInTree(root: string, path: string, maxBytes = 4 * 2 ** 20): Promise<string | undefined> {
  const host = await resolveInTree(root, path);
  const st = await lstat(host).catch(() => undefined);
  if (st === undefined) return undefined;
  if (!st.isFile()) throw new BuildError(`${path} in the image is not a regular file`);
  if (st.size > maxBytes) throw new BuildError(`${path} in the image is larger than ${maxBytes} bytes`);
  return readFile(host, "utf8");
}

/** The type of what `path` in the tree resolves to, or undefined when nothing is there. */
export async function statInTree(
  root: string,
  path: string,
): Promise<{ file: boolean; dir: boolean; mode: number; size: number } | undefined> {
  const st = await lstat(await resolveInTree(root, path)).catch(() => undefined);
  if (st === undefined) return undefined;
  return { file: st.isFile(), dir: st.isDirectory(), mode: st.mode, size: st.size };
}

/** What {@link sanitizeTree} found and did. */
export interface SanitizeReport {
  /** Character and block device nodes removed (a guest gets its devices from the runtime). */
  devicesRemoved: string[];
  /** Files with the setuid or setgid bit (kept: sudo needs it; the version directory is root-only). */
  setid: string[];
}

/**
 * Walks the tree without following links: removes device nodes (a host-side device node in a
 * tenant's tree is a door to the host's hardware for anyone who can reach it; guests get /dev from
 * their runtime) and lists setuid/setgid files.
 */
export async function sanitizeTree(root: string): Promise<SanitizeReport> {
  const report: SanitizeReport = { devicesRemoved: [], setid: [] };
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const abs = join(dir, entry.name);
      const relPath = `${rel}/${entry.name}`;
      if (entry.isDirectory()) await walk(abs, relPath);
      else if (entry.isCharacterDevice() || entry.isBlockDevice()) {
        await rm(abs, { force: true });
        report.devicesRemoved.push(relPath);
      } else if (entry.isFile()) {
        const st = await lstat(abs);
        if (st.mode & 0o6000) report.setid.push(relPath);
      }
    }
  };
  await walk(root, "");
  return report;
}
