#!/usr/bin/env node
// The `wrenn` package bin (and `npm start`): runs the TypeScript CLI from this package's directory
// with no build step. The CLI's sources are bundled into one JavaScript file with esbuild on first
// use and whenever one of them changes, because importing hundreds of modules through tsx's loader
// hooks costs seconds of start-up on a small machine; when bundling is not possible (no esbuild, a
// read-only node_modules) it runs the sources through tsx as before.
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = fileURLToPath(new URL("../", import.meta.url));
const entry = fileURLToPath(new URL("../cli/main.ts", import.meta.url));
const cacheDir = fileURLToPath(new URL("../node_modules/.cache/wrenn/", import.meta.url));
// Names the current build's directory and what it was built from.
const manifestFile = `${cacheDir}cli.json`;

/** The current build's entry file, if it was built from exactly the sources on disk now (same size and mtime each). */
function currentBundle() {
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
 * they resolve against themselves (migrations, package.json, guest files) stay right.
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
 * Bundles the CLI into a new directory named by its contents: one chunk per command (each loads
 * only its own dependencies) and a manifest naming it, renamed into place last, so a concurrent
 * start sees either the old build or the new one. Older builds stay for a day: a running `wrenn up`
 * may still load chunks from its own.
 */
async function buildBundle() {
  const esbuild = await import("esbuild");
  const options = {
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
  };
  const result = await esbuild.build(options);
  const hash = createHash("sha256");
  for (const file of result.outputFiles) hash.update(file.path).update(file.contents);
  const dir = `${cacheDir}cli-${hash.digest("hex").slice(0, 16)}/`;
  const outdir = `${root}out/`;
  mkdirSync(dir, { recursive: true });
  for (const file of result.outputFiles) writeFileSync(`${dir}${file.path.slice(outdir.length)}`, file.contents);
  const inputs = {};
  for (const input of Object.keys(result.metafile.inputs)) {
    const file = `${root}${input}`;
    const { size, mtimeMs } = statSync(file);
    inputs[file] = { size, mtimeMs };
  }
  const main = `${dir}main.js`;
  const partial = `${manifestFile}.${process.pid}.tmp`;
  writeFileSync(partial, JSON.stringify({ main, inputs }));
  renameSync(partial, manifestFile);
  const dayAgo = Date.now() - 86_400_000;
  for (const name of readdirSync(cacheDir)) {
    const old = `${cacheDir}${name}/`;
    if (name.startsWith("cli-") && old !== dir && statSync(old).mtimeMs < dayAgo)
      rmSync(old, { recursive: true, force: true });
  }
  return main;
}

async function runWithTsx() {
  const { register } = await import("tsx/esm/api");
  register();
  await import(pathToFileURL(entry).href);
}

let main = currentBundle();
if (main === undefined) {
  try {
    main = await buildBundle();
  } catch {
    // Running from the sources still works, and reports a broken source file better than esbuild would.
  }
}
if (main !== undefined) await import(pathToFileURL(main).href);
else await runWithTsx();
