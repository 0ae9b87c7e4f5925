import {
  copyFile,
  mkdir,
  open,
  readdir,
  readFile,
  realpath,
  rename,
  rm,
  stat,
  truncate,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import type { FilesLayout } from "../agent/layout.js";
import { buildCodeInterpreter, CODE_INTERPRETER_DIR } from "../interpreter/build.js";
import { BuildError } from "./errors.js";
import { exists, hashFile, hashParts, hashTree, replaceSymlink, writeFileAtomic } from "./fsutil.js";
import type { DebianMirrors } from "./host.js";
import { type BinarySource, injectEnvd, resolveBinary } from "./inject.js";
import type { Progress } from "./progress.js";
import { run } from "./run.js";
import { buildDir, DEBIAN_SUITE, SANDBOX_USER, type Stage } from "./stages.js";
import type { TemplateSpec } from "./templates.js";

/** Bump when the assembly below changes in a way its inputs do not capture. */
const IMAGE_BUILDER_VERSION = "1";

const guestDir = join(import.meta.dirname, "guest");

/** images/<template>/manifest.json: written last; an image directory without it is incomplete. */
export interface ImageManifest {
  template: string;
  /** Cache key of this image version (hash of every input). */
  key: string;
  /** The real directory of this version (images/.versions/<template>-<key>); pin this, not the symlink. */
  versionDir: string;
  rootfsTree: string;
  rootfsExt4: string;
  ext4SizeBytes: number;
  treeBytes: number;
  /** The Debian release and mirror of a recipe template; null for an imported container image. */
  debian: { suite: string; mirror: string } | null;
  /** Where an imported template came from and what of its image config it keeps (rootfs/oci.ts). */
  source?: ImageSource;
  user: { name: string; uid: number; gid: number; home: string };
  env: Record<string, string>;
  startCommand: string | null;
  envd: { path: string; distSha256: string };
  tini: { path: string; source: BinarySource; from: string };
  socat: { path: string; source: BinarySource; from: string };
  init: string;
  builtAt: string;
  buildSeconds: number;
}

/** An imported container image: its reference, the digest pulled, and the image config Wrenn keeps. */
export interface ImageSource {
  kind: "oci";
  reference: string;
  /** Digest of the image manifest that was pulled (sha256:…). */
  digest: string;
  /** The image's WorkingDir: the default working directory its sandboxes should start in (null: the home). */
  workdir: string | null;
  /** The image's User, noted only: Wrenn runs commands as `user` (or root when asked). */
  user: string | null;
  /** The image's Entrypoint + Cmd, noted only: a template's start command is set explicitly. */
  command: string[] | null;
  /** Exposed ports, noted only. */
  exposedPorts: string[];
  /** Whether the image has sudo (so `user` may run commands as root through it). */
  sudo: boolean;
}

/** Where image versions live; images/<template> is a symlink to one of them. */
export function versionsDir(layout: FilesLayout): string {
  return join(layout.imagesDir, ".versions");
}

/** Reads an image's manifest, or undefined when the image is absent or incomplete. */
export async function readImageManifest(layout: FilesLayout, template: string): Promise<ImageManifest | undefined> {
  try {
    return JSON.parse(await readFile(layout.imageManifest(template), "utf8")) as ImageManifest;
  } catch {
    return undefined;
  }
}

async function treeBytes(tree: string, signal?: AbortSignal): Promise<number> {
  const { stdout } = await run("du", ["-sb", "--apparent-size", tree], { signal });
  return Number.parseInt(stdout, 10);
}

/** Hash of the packaged envd, which keys the quick re-injection step. */
export async function envdDistHash(envdDist: string): Promise<string> {
  if (!(await exists(join(envdDist, "bin", "envd")))) {
    throw new BuildError(
      `envd is not built: ${join(envdDist, "bin", "envd")} is missing`,
      "run npm run build:envd (or set WRENN_ENVD_DIST)",
    );
  }
  return hashTree(envdDist);
}

const hostTini = ["/usr/bin/tini-static", "/usr/bin/tini", "/sbin/tini", "/usr/local/bin/tini"];
const hostSocat = ["/usr/bin/socat", "/usr/local/bin/socat"];

/**
 * Assembles images/<template> from a stage: copies the stage tree, injects wrenn-init, tini, socat and
 * envd, makes the ext4 image, writes manifest.json last, then atomically points images/<template> at
 * the new version. Reuses the current version when every input is unchanged.
 */
export async function assembleImage(opts: {
  layout: FilesLayout;
  progress: Progress;
  spec: TemplateSpec;
  env: Record<string, string>;
  stage: Stage;
  envdDist: string;
  mirrors: DebianMirrors;
  force?: boolean;
  signal?: AbortSignal | undefined;
}): Promise<{ manifest: ImageManifest; cached: boolean }> {
  const { layout, progress, spec, stage, signal } = opts;
  const name = spec.name;
  const started = performance.now();
  const envdHash = await envdDistHash(opts.envdDist);
  // The code-interpreter server goes into every image (a few hundred KB); only a template whose start
  // command runs it (code-interpreter) uses it. Bundled here, so its hash keys the image like envd's.
  const interpreterDist = await buildCodeInterpreter(
    join(buildDir(layout), `.assemble-code-interpreter-${process.pid}`),
  );
  const interpreterHash = await hashTree(interpreterDist);
  const hostBinaryHashes = await Promise.all(
    [...hostTini, ...hostSocat].map(async (p) => ((await exists(p)) ? `${p}:${await hashFile(p)}` : `${p}:-`)),
  );
  const key = hashParts([
    IMAGE_BUILDER_VERSION,
    stage.key,
    envdHash,
    interpreterHash,
    await readFile(join(guestDir, "wrenn-init")),
    await readFile(join(guestDir, "fstab.vm")),
    ...hostBinaryHashes,
  ]).slice(0, 16);

  const current = await readImageManifest(layout, name);
  if (!opts.force && current?.key === key && (await exists(layout.imageRootfsExt4(name)))) {
    await rm(interpreterDist, { recursive: true, force: true });
    progress.skip(`image ${name}`, `up to date (${current.versionDir})`);
    return { manifest: current, cached: true };
  }

  const versions = versionsDir(layout);
  await mkdir(versions, { recursive: true });
  const versionName = `${name}-${key}`;
  const work = join(buildDir(layout), `.assemble-${versionName}-${process.pid}`);
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const tree = join(work, "rootfs");
  try {
    await progress.step(`${name}: copy the stage tree`, () =>
      run("cp", ["-a", "--reflink=auto", stage.dir, tree], { signal }),
    );
    const injected = await progress.step(`${name}: inject wrenn-init, tini, socat and envd`, async () => {
      await mkdir(join(tree, "usr/local/bin"), { recursive: true });
      await copyFile(join(guestDir, "wrenn-init"), join(tree, "usr/local/bin/wrenn-init"));
      await run("chmod", ["0755", join(tree, "usr/local/bin/wrenn-init")], { signal });
      await mkdir(join(tree, "etc/wrenn"), { recursive: true });
      await copyFile(join(guestDir, "fstab.vm"), join(tree, "etc/wrenn/fstab.vm"));
      const tini = await resolveBinary({
        tree,
        name: "tini",
        target: "/sbin/tini",
        imageCandidates: ["/sbin/tini", "/usr/bin/tini-static", "/usr/bin/tini", "/usr/local/bin/tini"],
        hostCandidates: hostTini,
        aptPackage: { name: "tini", installs: "/usr/bin/tini" },
        signal,
      });
      const socat = await resolveBinary({
        tree,
        name: "socat",
        target: "/usr/bin/socat",
        imageCandidates: ["/usr/bin/socat", "/usr/local/bin/socat"],
        hostCandidates: hostSocat,
        aptPackage: { name: "socat", installs: "/usr/bin/socat" },
        signal,
      });
      await injectEnvd(tree, opts.envdDist, signal);
      await mkdir(join(tree, "opt/wrenn"), { recursive: true });
      await run("cp", ["-a", "--no-preserve=ownership", interpreterDist, join(tree, CODE_INTERPRETER_DIR.slice(1))], {
        signal,
      });
      // wrenn-init runs /etc/wrenn/start (the template's start command) and waits for it to be ready.
      if (spec.startCommand !== null) {
        await writeFile(join(tree, "etc/wrenn/start"), `#!/bin/sh\nexec ${spec.startCommand}\n`, { mode: 0o755 });
      }
      await writeFile(
        join(tree, "etc/wrenn/image.json"),
        `${JSON.stringify({ template: name, key, builtAt: new Date().toISOString() }, null, 2)}\n`,
      );
      return { tini, socat };
    });
    const bytes = await treeBytes(tree, signal);
    // The ext4 file is sparse: a generous apparent size costs nothing and leaves room for the sandbox's writes.
    const ext4Size = Math.max(2 * 2 ** 30, Math.ceil((bytes * 1.5 + 512 * 2 ** 20) / 2 ** 20) * 2 ** 20);
    const ext4 = join(work, "rootfs.ext4");
    await progress.step(`${name}: make the ext4 image (${(ext4Size / 2 ** 30).toFixed(1)} GiB sparse)`, async () => {
      const fh = await open(ext4, "w");
      await fh.close();
      await truncate(ext4, ext4Size);
      await run("mkfs.ext4", ["-q", "-F", "-L", "wrenn-root", "-E", "root_owner=0:0", "-d", tree, ext4], {
        signal,
        hint: "mkfs.ext4 from e2fsprogs ≥ 1.43 is needed for -d",
      });
    });
    const manifest: ImageManifest = {
      template: name,
      key,
      versionDir: join(versions, versionName),
      rootfsTree: join(versions, versionName, "rootfs"),
      rootfsExt4: join(versions, versionName, "rootfs.ext4"),
      ext4SizeBytes: ext4Size,
      treeBytes: bytes,
      debian: { suite: DEBIAN_SUITE, mirror: opts.mirrors.archive },
      user: { ...SANDBOX_USER },
      env: opts.env,
      startCommand: spec.startCommand,
      envd: { path: "/usr/local/bin/envd", distSha256: envdHash },
      tini: { path: "/sbin/tini", ...injected.tini },
      socat: { path: "/usr/bin/socat", ...injected.socat },
      init: "/usr/local/bin/wrenn-init",
      builtAt: new Date().toISOString(),
      buildSeconds: Math.round((performance.now() - started) / 100) / 10,
    };
    await writeFileAtomic(join(work, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    const versionDir = join(versions, versionName);
    await rm(versionDir, { recursive: true, force: true });
    await rename(work, versionDir);
    await switchImage(layout, name, versionDir);
    await pruneVersions(layout, name, versionName);
    return { manifest, cached: false };
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    throw err;
  } finally {
    await rm(interpreterDist, { recursive: true, force: true });
  }
}

/** Points images/<template> at a version; a real directory there (from an older layout) is moved aside. */
export async function switchImage(layout: FilesLayout, name: string, versionDir: string): Promise<void> {
  const link = layout.imageDir(name);
  const st = await stat(link).catch(() => undefined);
  if (st?.isDirectory() && (await realpath(link)) === link) {
    await rename(link, join(buildDir(layout), `replaced-${name}-${Date.now()}`));
  }
  await replaceSymlink(link, join(".versions", versionDir.slice(versionDir.lastIndexOf("/") + 1)));
}

/**
 * Names of image versions something still refers to: a mount (an overlay lower dir pinned by real path)
 * or a small state file of a sandbox or snapshot (a QEMU runtime manifest names its disk's backing file).
 */
async function versionsInUse(layout: FilesLayout, candidates: string[]): Promise<Set<string>> {
  const texts: string[] = [await readFile("/proc/self/mountinfo", "utf8").catch(() => "")];
  // Matched by full path: a version's name is a hash of its inputs, so another images root (a test's
  // scratch root, a second install) can hold a version of the same name that its own sandboxes mount.
  const dir = versionsDir(layout);
  const realDir = await realpath(dir).catch(() => dir);
  const refersTo = (text: string, c: string) =>
    [dir, realDir].some((base) => {
      const at = `${base}/${c}`;
      for (let i = text.indexOf(at); i >= 0; i = text.indexOf(at, i + 1)) {
        // The path must end there or go on into the version (not into a longer name).
        if (!/[0-9a-z-]/.test(text[i + at.length] ?? "")) return true;
      }
      return false;
    });
  for (const base of [layout.sandboxesDir, layout.snapshotsDir]) {
    for (const id of await readdir(base).catch(() => [] as string[])) {
      for (const file of await readdir(join(base, id)).catch(() => [] as string[])) {
        const abs = join(base, id, file);
        const st = await stat(abs).catch(() => undefined);
        if (st?.isFile() && st.size < 1 << 20) texts.push(await readFile(abs, "utf8").catch(() => ""));
      }
    }
  }
  return new Set(candidates.filter((c) => texts.some((t) => refersTo(t, c))));
}

/**
 * Keeps the current and the previous version of a template (running sandboxes may still use the
 * previous one through a pinned path) and removes older ones that nothing refers to any more.
 */
export async function pruneVersions(layout: FilesLayout, name: string, keep: string): Promise<void> {
  const dir = versionsDir(layout);
  const mine = [];
  for (const entry of await readdir(dir)) {
    if (entry !== keep && entry.startsWith(`${name}-`) && /^[0-9a-f]{16}$/.test(entry.slice(name.length + 1))) {
      mine.push({ entry, mtime: (await stat(join(dir, entry))).mtimeMs });
    }
  }
  mine.sort((a, b) => b.mtime - a.mtime);
  const older = mine.slice(1).map((m) => m.entry);
  const inUse = await versionsInUse(layout, older);
  for (const entry of older) if (!inUse.has(entry)) await rm(join(dir, entry), { recursive: true, force: true });
}
