/**
 * Packages the code-interpreter server for the guest (the image builder calls this, see
 * rootfs/image.ts, and copies the result to /opt/wrenn/code-interpreter in every image):
 *
 *   bin/code-interpreter    sh wrapper: runs the bundle with envd's node (/opt/wrenn/envd/bin/node)
 *   lib/server.mjs          interpreter/main.ts bundled with esbuild (zod inlined)
 *   lib/bridge.py           the jupyter_client bridge, one process per context
 *   lib/kernel_startup.py   run in every kernel: per-call env, chart and DataFrame formatters
 *
 * Only the code-interpreter template starts it (its startCommand); elsewhere it is 300 KB of files.
 */
import { chmod, copyFile, mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = fileURLToPath(new URL(".", import.meta.url));

/** Where the package goes in the image. */
export const CODE_INTERPRETER_DIR = "/opt/wrenn/code-interpreter";

const WRAPPER = `#!/bin/sh
# Wrenn code-interpreter server (port 49999): the bundle run by envd's node.
self=$(readlink -f "$0")
dir=$(dirname "$self")
exec /opt/wrenn/envd/bin/node "$dir/../lib/server.mjs" "$@"
`;

/** Builds the package into `outDir` (emptied first) and returns it. */
export async function buildCodeInterpreter(outDir: string): Promise<string> {
  await rm(outDir, { recursive: true, force: true });
  await mkdir(join(outDir, "bin"), { recursive: true });
  await mkdir(join(outDir, "lib"), { recursive: true });
  await build({
    entryPoints: [join(here, "main.ts")],
    outfile: join(outDir, "lib/server.mjs"),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    legalComments: "none",
    logLevel: "warning",
  });
  for (const file of ["bridge.py", "kernel_startup.py"]) await copyFile(join(here, file), join(outDir, "lib", file));
  await writeFile(join(outDir, "bin/code-interpreter"), WRAPPER);
  await chmod(join(outDir, "bin/code-interpreter"), 0o755);
  return outDir;
}
