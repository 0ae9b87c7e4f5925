/**
 * `npm run build:envd`: packages envd for a Debian bookworm guest into dist/envd/:
 *
 *   dist/envd/bin/envd          sh wrapper; resolves its real directory (works through a symlink)
 *   dist/envd/bin/node          this host's node binary, stripped
 *   dist/envd/lib/envd.mjs      envd bundled with esbuild (all JS dependencies inlined)
 *   dist/envd/lib/envd.blob     a V8 startup snapshot of envd taken with bin/node (see buildSnapshot)
 *   dist/envd/lib/envd.blob.key what the blob was built from (sha256 of bin/node and the snapshot's script)
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
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build, type Plugin } from "esbuild";
import { ENVD_VERSION } from "./version.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const require = createRequire(import.meta.url);

/**
 * Exit code of node when it cannot use a snapshot blob: missing, or "built with a different version
 * of V8 or with different V8 configurations". The V8 tag it checks covers the CPU features V8
 * detects: a blob built on this host is refused on another CPU model (measured: QEMU's TCG CPUs,
 * qemu64 and max, with or without V8's --no-enable-<feature> flags), so a VM guest, or an image
 * built on another machine, can refuse it.
 */
const SNAPSHOT_REFUSED_EXIT = 14;

/**
 * The wrapper script. It finds its real directory without starting a process where it can (every
 * fork and exec costs tens of milliseconds under gVisor's ptrace platform): called by its real path,
 * or through the link the image builders make (/usr/local/bin/envd → /opt/wrenn/envd/bin/envd,
 * recognised with test -ef, a shell builtin); any other link is resolved with `readlink -f`.
 *
 * With a snapshot (the build leaves it out when node refused it there) and WRENN_ENVD_SNAPSHOT not 0,
 * it starts node from the blob as its child and waits, passing on TERM, INT and HUP; when node
 * refuses the blob (exit ${SNAPSHOT_REFUSED_EXIT}, before any envd code ran) it starts the plain bundle instead, so a
 * guest on another CPU still gets its envd. Without a snapshot it execs node on the bundle. `--`
 * keeps envd's flags from node.
 */
const WRAPPER = `#!/bin/sh
# envd launcher: runs the bundled envd with the node binary shipped beside it.
dir=\${0%/*}
if [ ! -x "$dir/node" ]; then
  if [ "$0" -ef /opt/wrenn/envd/bin/envd ]; then
    dir=/opt/wrenn/envd/bin
  else
    self=$(readlink -f "$0")
    dir=\${self%/*}
  fi
fi
if [ "\${WRENN_ENVD_SNAPSHOT:-1}" != 0 ] && [ -r "$dir/../lib/envd.blob" ]; then
  "$dir/node" --snapshot-blob "$dir/../lib/envd.blob" -- "$@" <&0 &
  pid=$!
  trap 'kill -TERM $pid 2>/dev/null' TERM
  trap 'kill -INT $pid 2>/dev/null' INT
  trap 'kill -HUP $pid 2>/dev/null' HUP
  # wait returns early when a trapped signal arrives: wait again until node has exited.
  while :; do
    wait $pid
    rc=$?
    kill -0 $pid 2>/dev/null || break
  done
  [ $rc -ne ${SNAPSHOT_REFUSED_EXIT} ] && exit $rc
  trap - TERM INT HUP
fi
exec "$dir/node" "$dir/../lib/envd.mjs" "$@"
`;

/**
 * Built-ins that Node 20 cannot load while it builds a snapshot (node:http's module body fails
 * there). The snapshot's bundle gets a stand-in for each that loads the real module on first use:
 * it lists the module's export names (read here, from the same node) without loading it.
 */
const DEFERRED_BUILTINS = ["http", "https", "http2"];

/** esbuild plugin for the snapshot's CommonJS bundle: deferred built-ins and node-pty from beside the bundle. */
function snapshotPlugin(): Plugin {
  return {
    name: "envd-snapshot",
    setup(b) {
      const deferred = new RegExp(`^(node:)?(${DEFERRED_BUILTINS.join("|")})$`);
      b.onResolve({ filter: deferred }, (args) =>
        args.namespace === "deferred-builtin"
          ? { path: args.path, external: true }
          : { path: args.path.replace(/^node:/, ""), namespace: "deferred-builtin" },
      );
      b.onLoad({ filter: /.*/, namespace: "deferred-builtin" }, (args) => {
        const keys = Object.getOwnPropertyNames(require(args.path));
        return {
          loader: "js",
          contents: `
const keys = ${JSON.stringify(keys)};
let real;
const load = () => (real ??= require("node:${args.path}"));
// esbuild's ESM interop reads the export names and __esModule when the bundle is evaluated (in
// the snapshot builder); every other read is a use, after start, and loads the module.
module.exports = new Proxy({}, {
  get: (_, key) => (key === "__esModule" && real === undefined ? undefined : load()[key]),
  has: (_, key) => key in load(),
  ownKeys: () => keys,
  getOwnPropertyDescriptor: (_, key) =>
    keys.includes(key) ? { configurable: true, enumerable: true, get: () => load()[key] } : undefined,
});
`,
        };
      });
      // The snapshot's require() only loads built-ins; the PTY addon is loaded from the package.
      b.onResolve({ filter: /^@lydell\/node-pty$/ }, () => ({ path: "node-pty", namespace: "package-require" }));
      b.onLoad({ filter: /.*/, namespace: "package-require" }, () => ({
        loader: "js",
        contents: `
const { createRequire } = require("node:module");
const { join } = require("node:path");
module.exports = createRequire(join(process.execPath, "../../lib/envd.cjs"))("@lydell/node-pty");
`,
      }));
    },
  };
}

/** Builds dist/envd (or `outDir`) and returns its path. */
export async function buildEnvd(outDir = join(repoRoot, "dist/envd")): Promise<string> {
  const previous = previousSnapshot(outDir);
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
  await buildSnapshot(outDir, previous);
  writeFileSync(join(outDir, "bin/envd"), WRAPPER, { mode: 0o755 });
  writeFileSync(join(outDir, "VERSION"), `${ENVD_VERSION}\n`);
  return outDir;
}

interface PreviousSnapshot {
  key: string;
  blob: Buffer;
}

/** The blob of the package about to be rebuilt, with the key of what it was built from. */
function previousSnapshot(outDir: string): PreviousSnapshot | undefined {
  try {
    const key = readFileSync(join(outDir, "lib/envd.blob.key"), "utf8").trim();
    return { key, blob: readFileSync(join(outDir, "lib/envd.blob")) };
  } catch {
    return undefined;
  }
}

/**
 * Builds lib/envd.blob: envd bundled as one CommonJS script (what Node 20's --build-snapshot takes),
 * evaluated by the shipped bin/node, whose heap is saved. A blob belongs to the exact node binary
 * that wrote it, so it is written by bin/node itself, after stripping. It is then started once with
 * `-version`: if node rejects it (a blob from another node or other V8 flags: exit 14, "Failed to
 * load the startup snapshot"; a damaged file: a crash) or envd does not answer with its version, the
 * blob is removed and the wrapper falls back to the plain bundle. A failing snapshot build likewise leaves the package without a blob, with a warning.
 */
async function buildSnapshot(outDir: string, previous: PreviousSnapshot | undefined): Promise<void> {
  const node = join(outDir, "bin/node");
  const script = join(outDir, "lib/envd-snapshot.cjs");
  const blob = join(outDir, "lib/envd.blob");
  const keyFile = join(outDir, "lib/envd.blob.key");
  try {
    await build({
      entryPoints: [join(repoRoot, "agent/envd/snapshot.ts")],
      outfile: script,
      bundle: true,
      platform: "node",
      format: "cjs",
      target: "node20",
      minify: true,
      keepNames: true,
      plugins: [snapshotPlugin()],
      // import.meta.url (xattr.ts finds libexec/ with it) is read after start, where the bundle would be.
      define: { "import.meta.url": "__envdModuleUrl" },
      banner: {
        js: `var __envdModuleUrl = { toString: () => require("node:url").pathToFileURL(require("node:path").join(process.execPath, "../../lib/envd.cjs")).href };`,
      },
      legalComments: "none",
      logLevel: "warning",
    });
    // V8 writes a different blob on every run (addresses, hash seeds), and the image builder keys images
    // by the package's bytes: the blob is reused as long as node and the script are the same.
    const key = createHash("sha256").update(readFileSync(node)).update(readFileSync(script)).digest("hex");
    if (previous?.key === key) {
      writeFileSync(blob, previous.blob);
    } else {
      execFileSync(node, ["--snapshot-blob", blob, "--build-snapshot", script], {
        cwd: join(outDir, "lib"),
        stdio: ["ignore", "ignore", "pipe"],
      });
    }
    writeFileSync(keyFile, `${key}\n`);
    const version = execFileSync(node, ["--snapshot-blob", blob, "--", "-version"], {
      stdio: ["ignore", "pipe", "pipe"],
    })
      .toString()
      .trim();
    if (version !== ENVD_VERSION) throw new Error(`the snapshot answered -version with "${version}"`);
  } catch (err) {
    rmSync(blob, { force: true });
    rmSync(keyFile, { force: true });
    const detail = (err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message;
    console.warn(`envd: no startup snapshot, the plain bundle will be used: ${detail}`);
  } finally {
    // The script is only the snapshot's input; the blob holds everything it compiled.
    rmSync(script, { force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = await buildEnvd(process.argv[2]);
  console.log(`built ${out}: ${readdirSync(out).join(", ")}`);
}
