import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { access } from "node:fs/promises";
import { filesLayout } from "../../agent/layout.js";
import { readImageManifest } from "../../rootfs/image.js";
import { listTemplates } from "../../rootfs/templates.js";
import { parseCommand, usageError } from "../args.js";
import type { CliEnvironment } from "../config.js";
import type { CommandContext } from "../context.js";
import { CliError, exitCodes } from "../errors.js";
import { printJson } from "../output.js";
import { packageRoot } from "../paths.js";

const imageUsage = `usage: wrenn image <command>

  build [template|all] [--force]   build (or reuse) the guest kernel and a template's image (default: minimal)
  list [--json]                    templates and what is built

Images live under AGENT_FILES_ROOTDIR (default /var/lib/wrenn); building needs root.`;

/** Whether a template's image is complete (its manifest is written last). */
export async function imageIsBuilt(env: CliEnvironment, template: string): Promise<boolean> {
  return access(filesLayout(env.filesRoot).imageManifest(template)).then(
    () => true,
    () => false,
  );
}

/**
 * Runs the image builder (`rootfs/cli.ts`) as a child with this terminal, so its step-by-step
 * progress shows as it goes. Ctrl-C reaches it too; it keeps nothing half-built.
 */
export async function runImageBuilder(
  env: CliEnvironment,
  args: string[],
  signal?: AbortSignal,
  logFile?: string,
  extraEnv: Record<string, string> = {},
): Promise<number> {
  const child = spawn(process.execPath, ["--import", "tsx", "rootfs/cli.ts", ...args], {
    cwd: packageRoot,
    env: { ...env.raw, ...extraEnv, AGENT_FILES_ROOTDIR: env.filesRoot },
    stdio: ["ignore", logFile ? "pipe" : "inherit", logFile ? "pipe" : "inherit"],
  });
  // With a log file, the output goes both to this terminal (as it comes) and to the file.
  const log = logFile ? createWriteStream(logFile, { flags: "a" }) : undefined;
  log?.write(`\n=== ${new Date().toISOString()} image ${args.join(" ")}\n`);
  child.stdout?.on("data", (chunk: Buffer) => {
    process.stdout.write(chunk);
    log?.write(chunk);
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    process.stderr.write(chunk);
    log?.write(chunk);
  });
  const onAbort = () => child.kill("SIGINT");
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once("error", reject);
      child.once("close", (code, sig) => resolve(code ?? (sig ? 130 : 1)));
    });
  } finally {
    signal?.removeEventListener("abort", onAbort);
    await new Promise<void>((resolve) => (log ? log.end(resolve) : resolve()));
  }
}

/** Builds a template's image unless it is already there; fails with a hint when the build fails. */
export async function ensureImage(
  ctx: CommandContext,
  template: string,
  logFile?: string,
  opts: { microvmKernel?: boolean } = {},
): Promise<void> {
  if (await imageIsBuilt(ctx.env, template)) return;
  if (!ctx.env.isRoot) {
    throw new CliError(
      `the guest image "${template}" is not built under ${ctx.env.filesRoot}, and building it needs root`,
      {
        exitCode: exitCodes.usage,
        hint: "run as root (sudo npm start), or build it once with: sudo npx wrenn image build",
      },
    );
  }
  ctx.output.err(`building the guest image "${template}" (first start only; a few minutes)…`);
  const started = performance.now();
  const code = await runImageBuilder(ctx.env, ["build", template], ctx.signal, logFile, {
    WRENN_MICROVM_KERNEL: opts.microvmKernel === false ? "skip" : "build",
  });
  if (ctx.signal.aborted) throw new CliError("interrupted while building the image", { exitCode: 130 });
  if (code !== 0 || !(await imageIsBuilt(ctx.env, template))) {
    throw new CliError(`building the guest image "${template}" failed (exit ${code})`, {
      hint: `the lines above say why${logFile ? ` (the whole output: ${logFile})` : ""}; fix it and retry with the same command, e.g. \`npm start\` (finished steps are cached)`,
    });
  }
  ctx.output.err(`guest image "${template}" built in ${((performance.now() - started) / 1000).toFixed(0)}s`);
}

/** `wrenn image …` */
export async function imageCommand(ctx: CommandContext, args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  const { values, positionals } = parseCommand(
    rest,
    {
      json: { type: "boolean", default: false },
      force: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    imageUsage,
  );
  if (verb === undefined) {
    ctx.output.err(imageUsage);
    return exitCodes.usage;
  }
  if (values.help || verb === "help") {
    ctx.output.out(imageUsage);
    return exitCodes.ok;
  }
  switch (verb) {
    case "build": {
      if (positionals.length > 1) usageError("image build takes one template (or all)", imageUsage);
      if (!ctx.env.isRoot) {
        throw new CliError("building images needs root (debootstrap, chroot, device nodes)", {
          exitCode: exitCodes.usage,
          hint: "sudo npx wrenn image build",
        });
      }
      return runImageBuilder(
        ctx.env,
        ["build", positionals[0] ?? "minimal", ...(values.force ? ["--force"] : [])],
        ctx.signal,
      );
    }
    case "list":
    case "ls": {
      if (!values.json) return runImageBuilder(ctx.env, ["list"], ctx.signal);
      const layout = filesLayout(ctx.env.filesRoot);
      const images = [];
      for (const template of await listTemplates()) {
        const manifest = await readImageManifest(layout, template);
        images.push({ template, built: manifest !== undefined, manifest: manifest ?? null });
      }
      printJson(ctx.output, { root: ctx.env.filesRoot, images });
      return exitCodes.ok;
    }
    default:
      return usageError(`unknown image command "${verb}"`, imageUsage);
  }
}
