import { mkdir, readdir, readFile, realpath } from "node:fs/promises";
import { join } from "node:path";
import { filesLayout } from "../agent/layout.js";
import { buildImage } from "./build.js";
import { loadImageBuilderConfig } from "./config.js";
import { BuildError } from "./errors.js";
import { requireRoot } from "./host.js";
import { readImageManifest } from "./image.js";
import { ensureKernel, type KernelManifest } from "./kernel.js";
import { importImage, parseCredentials } from "./oci.js";
import { Progress } from "./progress.js";
import { listTemplates } from "./templates.js";

const usage = `usage: npm run image -- <command>

  build [template|all] [--force] [--no-envd-build] [--root DIR]
        build (or reuse) the guest kernel and the template's image (default: minimal)
  kernel [--force] [--root DIR]
        build (or reuse) only the guest kernel and initramfs (kernels/current)
  list  [--root DIR]
        show the templates and what is built under the root
  import <registry/name:tag> --as <template> [--creds user:pass] [--tls-verify=false] [--max-bytes N] [--root DIR]
        pull a container image (skopeo) and make it a template (docs/images.md)

Environment: AGENT_FILES_ROOTDIR (default /var/lib/wrenn), WRENN_DEBIAN_MIRROR, WRENN_ENVD_DIST,
WRENN_REGISTRY_CREDS (user:pass for import, instead of --creds), WRENN_IMAGE_MAX_BYTES (default 10 GiB).`;

interface Args {
  command: string | undefined;
  positional: string[];
  force: boolean;
  buildEnvd: boolean;
  root: string | undefined;
  as: string | undefined;
  creds: string | undefined;
  tlsVerify: boolean;
  maxBytes: number | undefined;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    command: undefined,
    positional: [],
    force: false,
    buildEnvd: true,
    root: undefined,
    as: undefined,
    creds: undefined,
    tlsVerify: true,
    maxBytes: undefined,
  };
  const value = (i: number, flag: string) => {
    const v = argv[i];
    if (!v) throw new BuildError(`${flag} needs a value`, usage);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === "--") continue;
    if (a === "--as") args.as = value(++i, a);
    else if (a.startsWith("--as=")) args.as = a.slice("--as=".length);
    else if (a === "--creds") args.creds = value(++i, a);
    else if (a.startsWith("--creds=")) args.creds = a.slice("--creds=".length);
    else if (a === "--tls-verify=false") args.tlsVerify = false;
    else if (a === "--tls-verify" || a === "--tls-verify=true") args.tlsVerify = true;
    else if (a === "--max-bytes" || a.startsWith("--max-bytes=")) {
      const v = a === "--max-bytes" ? value(++i, a) : a.slice("--max-bytes=".length);
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n <= 0)
        throw new BuildError(`--max-bytes needs a positive number of bytes, not "${v}"`);
      args.maxBytes = n;
    } else if (a === "--force") args.force = true;
    else if (a === "--no-envd-build") args.buildEnvd = false;
    else if (a === "--root") {
      const v = argv[++i];
      if (!v) throw new BuildError("--root needs a directory");
      args.root = v;
    } else if (a.startsWith("--root=")) args.root = a.slice("--root=".length);
    else if (a === "-h" || a === "--help") args.command = "help";
    else if (a.startsWith("-")) throw new BuildError(`unknown option ${a}`, usage);
    else if (args.command === undefined) args.command = a;
    else args.positional.push(a);
  }
  return args;
}

async function list(rootDir: string): Promise<void> {
  const layout = filesLayout(rootDir);
  console.log(`root: ${rootDir}`);
  try {
    const kernel = JSON.parse(
      await readFile(join(layout.kernelsDir, "current", "manifest.json"), "utf8"),
    ) as KernelManifest;
    console.log(
      `kernel: ${kernel.kernelRelease} (${kernel.package} ${kernel.packageVersion}) → ${await realpath(join(layout.kernelsDir, "current"))}`,
    );
  } catch {
    console.log("kernel: not built");
  }
  const shipped = await listTemplates();
  // Imported templates (npm run image -- import) have no recipe; they are found by their manifest.
  const imported = (await readdir(layout.imagesDir).catch(() => [] as string[])).filter(
    (e) => !e.startsWith(".") && !shipped.includes(e),
  );
  for (const name of [...shipped, ...imported.sort()]) {
    const m = await readImageManifest(layout, name);
    if (!m) console.log(`  ${name.padEnd(12)} not built`);
    else {
      const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
      console.log(
        `  ${name.padEnd(12)} built ${m.builtAt}  tree ${mib(m.treeBytes)}  ext4 ${mib(m.ext4SizeBytes)} (sparse)  ${m.versionDir}${m.source ? `  from ${m.source.reference} (${m.source.digest.slice(0, 19)})` : ""}`,
      );
    }
  }
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const config = loadImageBuilderConfig();
  const rootDir = args.root ?? config.rootDir;
  switch (args.command) {
    case "build": {
      const controller = new AbortController();
      // process.on, not once: a loader (tsx) that sees no listener left would exit at once, before cleanup.
      const onSignal = (sig: NodeJS.Signals) => {
        if (controller.signal.aborted) return;
        process.stderr.write(`\n${sig}: stopping; nothing half-built is kept, rerun the same command to continue\n`);
        controller.abort();
      };
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      const wanted = args.positional[0] ?? "minimal";
      const templates = wanted === "all" ? await listTemplates() : [wanted];
      for (const template of templates) {
        await buildImage({
          rootDir,
          template,
          envdDist: config.envdDist,
          repoDir: config.repoDir,
          buildEnvd: args.buildEnvd,
          mirror: config.mirror,
          microvmKernel: config.microvmKernel === "build",
          force: args.force,
          signal: controller.signal,
        });
      }
      return 0;
    }
    case "kernel": {
      requireRoot();
      const layout = filesLayout(rootDir);
      await mkdir(layout.kernelsDir, { recursive: true });
      const progress = new Progress(3, (line) => process.stderr.write(`${line}\n`));
      const kernel = await ensureKernel({
        layout,
        progress,
        force: args.force,
        microvm: config.microvmKernel === "build",
      });
      process.stderr.write(
        `kernel ${kernel.manifest.kernelRelease}: ${kernel.cached ? "up to date" : "built"} → ${kernel.dir}\n`,
      );
      return 0;
    }
    case "list":
      await list(rootDir);
      return 0;
    case "import": {
      const reference = args.positional[0];
      if (reference === undefined || args.as === undefined)
        throw new BuildError("import needs an image reference and --as <template>", usage);
      const controller = new AbortController();
      const onSignal = (sig: NodeJS.Signals) => {
        if (controller.signal.aborted) return;
        process.stderr.write(`\n${sig}: stopping; nothing half-imported is kept\n`);
        controller.abort();
      };
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      const creds = args.creds ?? config.registryCreds;
      await importImage({
        rootDir,
        reference,
        template: args.as,
        envdDist: config.envdDist,
        credentials: creds === undefined ? undefined : parseCredentials(creds),
        tlsVerify: args.tlsVerify,
        maxBytes: args.maxBytes ?? config.maxImageBytes,
        signal: controller.signal,
      });
      return 0;
    }
    case "help":
    case undefined:
      console.log(usage);
      return args.command === "help" ? 0 : 2;
    default:
      throw new BuildError(`unknown command "${args.command}"`, usage);
  }
}

try {
  process.exitCode = await main();
} catch (err) {
  if (err instanceof BuildError) {
    process.stderr.write(`\nimage: ${err.message}\n`);
    if (err.hint) process.stderr.write(`hint: ${err.hint}\n`);
  } else {
    process.stderr.write(`\nimage: unexpected error: ${(err as Error).stack ?? String(err)}\n`);
  }
  process.exitCode = 1;
}
