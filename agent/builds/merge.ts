import { lstat, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Exec } from "../exec.js";

/**
 * Turns a template tree plus a build sandbox's writable layer (an overlay upper directory copied out
 * by a files-only snapshot, owners as guest ids) into the tree of a new template version.
 *
 * The base is cloned with hard links (`cp -al`: a fraction of a second for a Debian tree, no data
 * copied). Versions are never written in place, and every file the layer brings replaces its link
 * (`--remove-destination` unlinks before it writes), so the base version is never changed through a
 * shared inode. Overlay metadata in the layer: a whiteout (character device 0/0) deletes the path, an
 * opaque directory (`trusted.overlay.opaque=y`) hides everything the base had under it; a directory
 * redirect (a renamed base directory, only with redirect_dir on) cannot be replayed and fails the commit.
 */

const COPY_TIMEOUT_MS = 20 * 60_000;
const OVERLAY_XATTRS = [
  "trusted.overlay.opaque",
  "trusted.overlay.redirect",
  "trusted.overlay.origin",
  "trusted.overlay.impure",
];

interface LayerFacts {
  whiteouts: string[];
  /** Paths whose base entry must go before the copy: opaque directories, and type changes. */
  replaced: string[];
  dirsWithXattrs: string[];
}

async function overlayXattrs(exec: Exec, layer: string): Promise<Map<string, Set<string>>> {
  const out = new Map<string, Set<string>>();
  const r = await exec("getfattr", ["-R", "-P", "--absolute-names", "-m", "^trusted\\.overlay\\.", "-d", layer], {
    allowFailure: true,
    timeoutMs: COPY_TIMEOUT_MS,
  });
  let current = "";
  for (const line of r.stdout.split("\n")) {
    if (line.startsWith("# file: ")) current = line.slice("# file: ".length);
    else if (line.startsWith("trusted.overlay.") && current) {
      const name = line.slice(0, line.indexOf("="));
      const value = line.slice(line.indexOf("=") + 1);
      const set = out.get(current) ?? new Set<string>();
      set.add(value === '"y"' || value === "0x79" ? name : `${name}:${value}`);
      out.set(current, set);
    }
  }
  return out;
}

async function study(exec: Exec, base: string, layer: string): Promise<LayerFacts> {
  const xattrs = await overlayXattrs(exec, layer);
  const facts: LayerFacts = { whiteouts: [], replaced: [], dirsWithXattrs: [] };
  const visit = async (rel: string): Promise<void> => {
    for (const name of await readdir(join(layer, rel))) {
      const path = rel === "" ? name : `${rel}/${name}`;
      const st = await lstat(join(layer, path));
      if (st.isCharacterDevice() && st.rdev === 0) {
        facts.whiteouts.push(path);
        continue;
      }
      const attrs = xattrs.get(join(layer, path));
      if (attrs && [...attrs].some((a) => a.startsWith("trusted.overlay.redirect"))) {
        throw new Error(`the build renamed a directory of the base template (${path}); it cannot be committed`);
      }
      const below = await lstat(join(base, path)).catch(() => undefined);
      if (st.isDirectory()) {
        if (attrs) facts.dirsWithXattrs.push(path);
        if (attrs?.has("trusted.overlay.opaque") || (below && !below.isDirectory())) facts.replaced.push(path);
        if (below?.isDirectory() || !below) await visit(path);
      } else if (below?.isDirectory()) {
        facts.replaced.push(path);
      }
    }
  };
  await visit("");
  return facts;
}

/** Makes `out` (which must not exist) the tree of `base` with `layer` applied. */
export async function mergeLayer(
  exec: Exec,
  base: string,
  layer: string,
  out: string,
  signal?: AbortSignal,
): Promise<void> {
  const facts = await study(exec, base, layer);
  await exec("cp", ["-al", "--no-target-directory", base, out], { signal, timeoutMs: COPY_TIMEOUT_MS });
  for (const path of [...facts.whiteouts, ...facts.replaced])
    await rm(join(out, path), { recursive: true, force: true });
  await exec("cp", ["-a", "--remove-destination", "--sparse=always", "--no-target-directory", `${layer}/.`, out], {
    signal,
    timeoutMs: COPY_TIMEOUT_MS,
  });
  // The copy brought the whiteouts and overlay attributes along; they mean nothing outside an overlay.
  for (const path of facts.whiteouts) await rm(join(out, path), { force: true });
  for (const path of facts.dirsWithXattrs) {
    for (const name of OVERLAY_XATTRS) {
      await exec("setfattr", ["-h", "-x", name, join(out, path)], { allowFailure: true });
    }
  }
}
