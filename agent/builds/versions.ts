import { mkdir, readdir, readFile, rename, rm, stat, symlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { FilesLayout } from "../layout.js";

/**
 * Template versions as the image builder lays them out (rootfs/image.ts, which agent/ may not import):
 * images/.versions/<template>-<16 hex>/ holds rootfs/ and manifest.json, and images/<template> is a
 * relative symlink to the current one, replaced atomically (rename over it).
 */

/** The fields of an image manifest a build reads and keeps (rootfs/image.ts ImageManifest has them all). */
export interface ImageManifestLike {
  template: string;
  key: string;
  versionDir: string;
  rootfsTree: string;
  rootfsExt4: string;
  env: Record<string, string>;
  [field: string]: unknown;
}

export function versionsDir(layout: FilesLayout): string {
  return join(layout.imagesDir, ".versions");
}

export async function readManifest(layout: FilesLayout, template: string): Promise<ImageManifestLike | undefined> {
  try {
    const parsed = JSON.parse(await readFile(layout.imageManifest(template), "utf8")) as ImageManifestLike;
    return typeof parsed.key === "string" ? { ...parsed, env: parsed.env ?? {} } : undefined;
  } catch {
    return undefined;
  }
}

/** Points images/<template> at `versionName` (a directory under .versions) in one rename. */
export async function switchVersion(layout: FilesLayout, template: string, versionName: string): Promise<void> {
  const link = layout.imageDir(template);
  await mkdir(dirname(link), { recursive: true });
  const tmp = join(dirname(link), `.${template}.link-${process.pid}-${Date.now()}`);
  await symlink(join(".versions", versionName), tmp);
  try {
    await rename(tmp, link);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** A template's version directories (<template>-<16 hex>), newest first. */
export async function versionsOf(layout: FilesLayout, template: string): Promise<string[]> {
  const dir = versionsDir(layout);
  const mine = [];
  for (const entry of await readdir(dir).catch(() => [] as string[])) {
    if (entry.startsWith(`${template}-`) && /^[0-9a-f]{16}$/.test(entry.slice(template.length + 1))) {
      mine.push({ entry, mtime: (await stat(join(dir, entry))).mtimeMs });
    }
  }
  return mine.sort((a, b) => b.mtime - a.mtime).map((m) => m.entry);
}

/**
 * Keeps the current and the previous version of a built template (sandboxes started before the switch
 * run on the previous one, pinned by its real path) and removes older ones that no mount names.
 */
export async function pruneBuiltVersions(layout: FilesLayout, template: string, current: string): Promise<void> {
  const older = (await versionsOf(layout, template)).filter((v) => v !== current).slice(1);
  if (older.length === 0) return;
  const mounts = await readFile("/proc/self/mountinfo", "utf8").catch(() => "");
  for (const entry of older) {
    if (mounts.includes(`/.versions/${entry}/`)) continue;
    await rm(join(versionsDir(layout), entry), { recursive: true, force: true });
  }
}
