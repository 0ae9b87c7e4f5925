/**
 * `npm run build:envd`: packages envd for a Debian bookworm guest into dist/envd/:
 *
 *   dist/envd/bin/envd          sh wrapper; resolves its real directory (works through a symlink)
 *   dist/envd/bin/node          this host's node binary, stripped
 *   dist/envd/lib/envd.mjs      envd bundled with esbuild (all JS dependencies inlined)
 *   dist/envd/node_modules/@lydell/node-pty   the PTY addon's JS (node-pty with prebuilt addons: no compiler)
 *   dist/envd/node_modules/@lydell/node-pty-<platform>-<arch>/pty.node   its compiled addon
 *   dist/envd/libexec/{getfattr,setfattr}   this host's attr tools (libc only), for file metadata
 *   dist/envd/VERSION           the envd protocol version
 *
 * The image builder copies dist/envd/ to /opt/wrenn/envd and links /usr/local/bin/envd to
 * /opt/wrenn/envd/bin/envd. The node binary and pty.node are built for this host's glibc and
 * architecture, so build on Debian bookworm (or older glibc) x86_64 for a bookworm x86_64 guest.
 * On the guest they need only libc, libstdc++ and libgcc_s, which every Debian base has, plus
 * setpriv (util-linux, essential in Debian) and socat for the port forwarder.
 */
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { ENVD_VERSION } from "./version.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const require = createRequire(import.meta.url);

/** The wrapper script: `readlink -f` follows /usr/local/bin/envd to the real install directory. */
const WRAPPER = `#!/bin/sh
# envd launcher: runs the bundled envd with the node binary shipped beside it.
self=$(readlink -f "$0")
dir=$(dirname "$self")
exec "$dir/node" "$dir/../lib/envd.mjs" "$@"
`;

/** Builds dist/envd (or `outDir`) and returns its path. */
export async function buildEnvd(outDir = join(repoRoot, "dist/envd")): Promise<string> {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(join(outDir, "bin"), { recursive: true });
  mkdirSync(join(outDir, "lib"), { recursive: true });

  await build({
    entryPoints: [join(repoRoot, "agent/envd/main.ts")],
    outfile: join(outDir, "lib/envd.mjs"),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    // The native addon is shipped as a package beside the bundle; everything else is inlined.
    external: ["@lydell/node-pty"],
    // CommonJS dependencies (busboy) call require() for Node built-ins; give the ESM bundle one.
    banner: {
      js: "import { createRequire as __envdCreateRequire } from 'node:module'; const require = __envdCreateRequire(import.meta.url);",
    },
    legalComments: "none",
    logLevel: "warning",
  });

  // @lydell/node-pty is node-pty's JS with the compiled addon in a per-platform package, so installing
  // needs no compiler. Both go beside the bundle.
  const ptyRoot = dirname(require.resolve("@lydell/node-pty/package.json"));
  const ptyOut = join(outDir, "node_modules/@lydell/node-pty");
  cpSync(ptyRoot, ptyOut, {
    recursive: true,
    filter: (src) => !src.endsWith(".map") && !src.endsWith(".md") && !src.endsWith(".d.ts"),
  });
  const binaryPackage = `@lydell/node-pty-${process.platform}-${process.arch}`;
  const binaryRoot = dirname(createRequire(join(ptyRoot, "index.js")).resolve(`${binaryPackage}/package.json`));
  cpSync(binaryRoot, join(outDir, "node_modules", binaryPackage), {
    recursive: true,
    filter: (src) => !src.endsWith(".md"),
  });

  // getfattr/setfattr need only libc; shipping them spares every image the `attr` package.
  mkdirSync(join(outDir, "libexec"), { recursive: true });
  for (const tool of ["getfattr", "setfattr"]) {
    const found = ["/usr/bin", "/bin", "/usr/local/bin"].map((d) => join(d, tool)).find((p) => existsSync(p));
    if (!found)
      throw new Error(`${tool} not found on this host: install the attr package (scripts/host-packages.json)`);
    copyFileSync(found, join(outDir, "libexec", tool));
    chmodSync(join(outDir, "libexec", tool), 0o755);
  }

  const node = join(outDir, "bin/node");
  copyFileSync(process.execPath, node);
  chmodSync(node, 0o755);
  try {
    execFileSync("strip", ["--strip-unneeded", node], { stdio: "ignore" });
  } catch {
    // strip (binutils) is optional: an unstripped node only costs disk space.
  }
  writeFileSync(join(outDir, "bin/envd"), WRAPPER, { mode: 0o755 });
  writeFileSync(join(outDir, "VERSION"), `${ENVD_VERSION}\n`);
  return outDir;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = await buildEnvd(process.argv[2]);
  console.log(`built ${out}: ${readdirSync(out).join(", ")}`);
}
