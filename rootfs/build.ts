import { mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { type FilesLayout, filesLayout } from "../agent/layout.js";
import { BuildError } from "./errors.js";
import { exists } from "./fsutil.js";
import {
  ensureHostTools,
  hostAptSources,
  pickDebianMirrors,
  requireFreeSpace,
  requireMirror,
  requireRoot,
} from "./host.js";
import { assembleImage, type ImageManifest } from "./image.js";
import { ensureKernel, type KernelManifest } from "./kernel.js";
import { acquireBuildLock } from "./lock.js";
import { Progress, type ProgressSink } from "./progress.js";
import { run } from "./run.js";
import { buildDir, DEBIAN_SUITE, ensureStages } from "./stages.js";
import { templateChain } from "./templates.js";

/** Options for {@link buildImage}. */
export interface BuildImageOptions {
  /** AGENT_FILES_ROOTDIR. */
  rootDir: string;
  /** Template to build (default "minimal"). */
  template?: string;
  /** The packaged envd to inject (dist/envd). */
  envdDist: string;
  /** Repository root; `npm run build:envd` runs there when `buildEnvd`. */
  repoDir: string;
  /** Run `npm run build:envd` first when the script exists (default true). */
  buildEnvd?: boolean;
  /** Debian mirror override (default: the host's apt mirror). */
  mirror?: string | undefined;
  /** Rebuild every stage even when cached. */
  force?: boolean;
  signal?: AbortSignal;
  /** Build the microvm guest kernel too (default true). */
  microvmKernel?: boolean;
  /** Progress lines (default: stderr). */
  log?: ProgressSink;
}

/** What {@link buildImage} produced. */
export interface BuildImageResult {
  manifest: ImageManifest;
  kernel: KernelManifest;
  /** True when nothing had to be built. */
  cached: boolean;
  seconds: number;
}

async function hasNpmScript(repoDir: string, script: string): Promise<boolean> {
  try {
    const pkg = JSON.parse(await readFile(join(repoDir, "package.json"), "utf8")) as {
      scripts?: Record<string, string>;
    };
    return typeof pkg.scripts?.[script] === "string";
  } catch {
    return false;
  }
}

/** Newest modification time (ms) of the files under `dir`, recursively; 0 when it does not exist. */
async function newestMtime(dir: string): Promise<number> {
  let newest = 0;
  const walk = async (d: string): Promise<void> => {
    const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const abs = join(d, e.name);
      if (e.isDirectory()) await walk(abs);
      else newest = Math.max(newest, (await stat(abs).catch(() => undefined))?.mtimeMs ?? 0);
    }
  };
  await walk(dir);
  return newest;
}

/**
 * Whether dist/envd is newer than everything it is built from (envd's sources and lib/, the generated
 * protocol code, the package manifests), so a rerun can skip `npm run build:envd` and stay a few seconds.
 */
async function envdDistFresh(repoDir: string, envdDist: string): Promise<boolean> {
  const built = await stat(join(envdDist, "bin", "envd")).catch(() => undefined);
  if (!built) return false;
  const sources = await Promise.all([
    newestMtime(join(repoDir, "agent", "envd")),
    // envd's bundle also takes the shared logger and listener from lib/.
    newestMtime(join(repoDir, "lib")),
    newestMtime(join(repoDir, "proto", "gen", "envd")),
    stat(join(repoDir, "package.json")).then(
      (s) => s.mtimeMs,
      () => 0,
    ),
    stat(join(repoDir, "package-lock.json")).then(
      (s) => s.mtimeMs,
      () => 0,
    ),
  ]);
  return Math.max(...sources) < built.mtimeMs;
}

/** Removes temporary directories of builds that were killed (we hold the lock, so none is in use). */
async function removeLeftovers(layout: FilesLayout): Promise<void> {
  const dirs: [string, RegExp][] = [
    [layout.kernelsDir, /^\.build-/],
    [buildDir(layout), /^\.assemble-/],
    [join(buildDir(layout), "stages"), /^\.tmp-/],
  ];
  for (const [dir, pattern] of dirs) {
    const entries = await readdir(dir).catch(() => [] as string[]);
    for (const entry of entries) if (pattern.test(entry)) await rm(join(dir, entry), { recursive: true, force: true });
  }
}

/**
 * Builds (or reuses) the guest kernel and one template's image under rootDir: kernels/current/ and
 * images/<template>/ (rootfs/ tree, rootfs.ext4, manifest.json written last). Every stage is cached by
 * the hash of its inputs and built in a temporary directory, so rerunning after an interruption
 * continues where it stopped, and a rerun with nothing changed takes seconds.
 */
export async function buildImage(opts: BuildImageOptions): Promise<BuildImageResult> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const template = opts.template ?? "minimal";
  const signal = opts.signal;
  requireRoot();
  const layout = filesLayout(opts.rootDir);
  const chain = await templateChain(template);
  const progress = new Progress(6 + chain.length * 2, log);
  await mkdir(layout.imagesDir, { recursive: true });
  await mkdir(layout.kernelsDir, { recursive: true });
  await requireFreeSpace(opts.rootDir, 3 * 2 ** 30);
  const release = await acquireBuildLock(join(buildDir(layout), "lock"));
  try {
    await removeLeftovers(layout);
    await ensureHostTools(progress, signal);
    const mirrors = pickDebianMirrors(await hostAptSources(), DEBIAN_SUITE, opts.mirror);
    const kernel = await ensureKernel({
      layout,
      progress,
      force: opts.force ?? false,
      signal,
      microvm: opts.microvmKernel ?? true,
    });
    if ((opts.buildEnvd ?? true) && (await hasNpmScript(opts.repoDir, "build:envd"))) {
      if (await envdDistFresh(opts.repoDir, opts.envdDist)) {
        progress.skip("npm run build:envd", "dist/envd is newer than envd's sources");
      } else {
        await progress.step("npm run build:envd", () =>
          run("npm", ["run", "--silent", "build:envd"], { cwd: opts.repoDir, signal }),
        );
      }
    } else if (!(await exists(join(opts.envdDist, "bin", "envd")))) {
      throw new BuildError(
        `envd is not built: ${join(opts.envdDist, "bin", "envd")} is missing and package.json has no build:envd script`,
        "build envd first, or set WRENN_ENVD_DIST to a packaged envd directory",
      );
    }
    let mirrorChecked = false;
    const stage = await ensureStages(chain, {
      layout,
      progress,
      mirrors,
      signal,
      force: opts.force ?? false,
      beforeBuild: async () => {
        if (mirrorChecked) return;
        mirrorChecked = true;
        await requireMirror(mirrors.archive, DEBIAN_SUITE, signal);
      },
    });
    const env = Object.assign({}, ...chain.map((t) => t.spec.env)) as Record<string, string>;
    const last = chain.at(-1);
    if (!last) throw new BuildError("empty template chain");
    const image = await assembleImage({
      layout,
      progress,
      spec: last.spec,
      env,
      stage,
      envdDist: opts.envdDist,
      mirrors,
      force: opts.force ?? false,
      signal,
    });
    const seconds = progress.elapsedSeconds();
    log(
      `image ${template}: ${image.cached ? "up to date" : "built"} in ${seconds.toFixed(1)}s → ${layout.imageDir(template)} (${image.manifest.versionDir})`,
    );
    return {
      manifest: image.manifest,
      kernel: kernel.manifest,
      cached: image.cached && kernel.cached && stage.cached,
      seconds,
    };
  } finally {
    await release();
  }
}
