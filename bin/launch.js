// Runs one of this package's TypeScript programs with no build step. Its sources are bundled with
// esbuild into node_modules/.cache/wrenn/ on first use and whenever one of them changes, because
// importing hundreds of modules through tsx's loader hooks costs seconds of start-up on a small
// machine; when bundling is not possible (no esbuild, a read-only node_modules, a source file that
// does not compile) it runs the sources through tsx, which also reports a broken file best.
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = fileURLToPath(new URL("../", import.meta.url));
const cacheDir = fileURLToPath(new URL("../node_modules/.cache/wrenn/", import.meta.url));

/** The current build's entry file, if it was built from exactly the sources on disk now (same size and mtime each). */
function currentBundle(manifestFile) {
  try {
    const { main, inputs } = JSON.parse(readFileSync(manifestFile, "utf8"));
    statSync(main);
    for (const [file, seen] of Object.entries(inputs)) {
      const now = statSync(file);
      if (now.size !== seen.size || now.mtimeMs !== seen.mtimeMs) return undefined;
    }
    return Object.keys(inputs).length > 0 ? main : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Source files keep their own `import.meta.url`/`dirname`/`filename` inside the bundle, so paths
 * they resolve against themselves (migrations, package.json, guest files) stay right. The rewrite is
 * textual: no bundled file spells these inside a string.
 */
const keepImportMeta = {
  name: "keep-import-meta",
  setup(build) {
    build.onLoad({ filter: /\.[cm]?ts$/ }, (args) => {
      if (args.path.includes("/node_modules/")) return undefined;
      const source = readFileSync(args.path, "utf8")
        .replaceAll("import.meta.url", JSON.stringify(pathToFileURL(args.path).href))
        .replaceAll("import.meta.dirname", JSON.stringify(dirname(args.path)))
        .replaceAll("import.meta.filename", JSON.stringify(args.path));
      return { contents: source, loader: "ts" };
    });
  },
};

/**
 * Bundles `entry` into a new directory named by its contents (code split, so each dynamically
 * imported command loads only its own dependencies) and then points the manifest at it, by a rename,
 * so a concurrent start sees either the old build or the new one. Older builds stay for a day: a
 * running `wrenn up` may still load chunks from its own. A build during which a source changed is
 * used once but not recorded.
 */
async function buildBundle(name, entry, manifestFile) {
  const esbuild = await import("esbuild");
  const { createHash } = await import("node:crypto");
  const startedMs = Date.now();
  const result = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    splitting: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    outdir: "out",
    write: false,
    metafile: true,
    logLevel: "silent",
    absWorkingDir: root,
    plugins: [keepImportMeta],
  });
  const hash = createHash("sha256");
  for (const file of result.outputFiles) hash.update(file.path).update(file.contents);
  const dir = `${cacheDir}${name}-${hash.digest("hex").slice(0, 16)}/`;
  const outdir = `${root}out/`;
  mkdirSync(dir, { recursive: true });
  // Each file aside and renamed: a concurrent first start building the same bundle rewrites the same
  // names, and a reader must never see one half written.
  for (const file of result.outputFiles) {
    const target = `${dir}${file.path.slice(outdir.length)}`;
    writeFileSync(`${target}.${process.pid}.tmp`, file.contents);
    renameSync(`${target}.${process.pid}.tmp`, target);
  }
  const entryRelative = entry.slice(root.length);
  const entryOutput = Object.keys(result.metafile.outputs).find(
    (out) => result.metafile.outputs[out].entryPoint === entryRelative,
  );
  const main = `${dir}${entryOutput.slice("out/".length)}`;
  const inputs = {};
  let changedMeanwhile = false;
  // This file too: how it bundles is part of what it built.
  for (const file of [
    fileURLToPath(import.meta.url),
    ...Object.keys(result.metafile.inputs).map((i) => `${root}${i}`),
  ]) {
    const { size, mtimeMs } = statSync(file);
    inputs[file] = { size, mtimeMs };
    if (mtimeMs >= startedMs - 2_000) changedMeanwhile = true;
  }
  if (changedMeanwhile) return main;
  const partial = `${manifestFile}.${process.pid}.tmp`;
  writeFileSync(partial, JSON.stringify({ main, inputs }));
  renameSync(partial, manifestFile);
  // Tidying is best effort: a failure here must not cost this start its bundle.
  const dayAgo = Date.now() - 86_400_000;
  try {
    for (const old of readdirSync(cacheDir, { withFileTypes: true })) {
      const path = `${cacheDir}${old.name}/`;
      // Build directories only: the manifests (`<name>-<checkout>.json`) share the prefix.
      if (!old.isDirectory() || !old.name.startsWith(`${name}-`) || path === dir) continue;
      if (statSync(path).mtimeMs < dayAgo) rmSync(path, { recursive: true, force: true });
    }
  } catch {
    // Another start removed it first.
  }
  return main;
}

/**
 * A short name for a path (FNV-1a, 64 bits): not node:crypto, whose loading costs a command about
 * 20 ms of start-up (`npm run bench -- cli`).
 */
function pathHash(path) {
  let hash = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(path)) hash = BigInt.asUintN(64, (hash ^ BigInt(byte)) * 0x100000001b3n);
  return hash.toString(16).padStart(16, "0");
}

/** Runs `entry` (a path relative to the package root, e.g. `cli/main.ts`), bundled under `name` when it can be. */
export async function runProgram(name, entry) {
  const entryFile = `${root}${entry}`;
  // Per checkout: node_modules (and so this cache) may be shared by several checkouts (a git
  // worktree linking the main one's node_modules), and each must run its own sources.
  const checkout = pathHash(root);
  const manifestFile = `${cacheDir}${name}-${checkout}.json`;
  let main = currentBundle(manifestFile);
  if (main === undefined) {
    try {
      main = await buildBundle(name, entryFile, manifestFile);
    } catch {
      // Run from the sources instead (below).
    }
  }
  if (main !== undefined) {
    await import(pathToFileURL(main).href);
    return;
  }
  const { register } = await import("tsx/esm/api");
  register();
  await import(pathToFileURL(entryFile).href);
}
