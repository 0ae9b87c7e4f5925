import { createWriteStream, openAsBlob } from "node:fs";
import { stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";
import { Sandbox } from "../../sdk/sandbox.js";
import { commonOptions, parseCommand, usageError } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { CliError, exitCodes } from "../errors.js";
import { printJson } from "../output.js";

const cpUsage = `usage: wrenn sandbox cp <src> <dst> [--user U]

  Upload:   wrenn sandbox cp ./data.csv <id>:/home/user/data.csv
  Download: wrenn sandbox cp <id>:/home/user/out.txt ./out.txt
  Use - for stdin (upload) or stdout (download). Files only; paths in the sandbox
  are relative to the user's home unless absolute. Nothing is buffered whole.`;

/** A `cp` operand: a local path or `<sandbox id>:<path>`. */
export type CopyEndpoint = { kind: "local"; path: string } | { kind: "sandbox"; sandboxId: string; path: string };

/** Reads a `cp` operand. Sandbox ids are 20 characters of [a-z0-9], so `C:\x` or `./a:b` stay local. */
export function parseEndpoint(text: string): CopyEndpoint {
  const match = /^([a-z0-9]{20}):(.*)$/.exec(text);
  if (!match) return { kind: "local", path: text };
  return { kind: "sandbox", sandboxId: match[1] ?? "", path: match[2] || "." };
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** `wrenn sandbox cp` */
export async function copy(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    { ...commonOptions, user: { type: "string", short: "u" } },
    cpUsage,
  );
  if (values.help) {
    ctx.output.out(cpUsage);
    return exitCodes.ok;
  }
  if (positionals.length !== 2) usageError("sandbox cp takes a source and a destination", cpUsage);
  const src = parseEndpoint(positionals[0] ?? "");
  const dst = parseEndpoint(positionals[1] ?? "");
  if ((src.kind === "sandbox") === (dst.kind === "sandbox")) {
    usageError("exactly one side of cp must be <sandbox id>:<path>", cpUsage);
  }
  const conn = await connection(ctx, values);
  const fileOptions = { signal: ctx.signal, ...(values.user ? { user: values.user } : {}) };
  const started = performance.now();
  if (dst.kind === "sandbox" && src.kind === "local") {
    const sandbox = await Sandbox.connect(dst.sandboxId, conn);
    let target = dst.path;
    let data: Blob | ReadableStream<Uint8Array>;
    if (src.path === "-") {
      data = Readable.toWeb(process.stdin) as ReadableStream<Uint8Array>;
    } else {
      const info = await stat(src.path).catch((err: NodeJS.ErrnoException) => {
        throw new CliError(`cannot read ${src.path}: ${err.code === "ENOENT" ? "no such file" : err.message}`);
      });
      if (info.isDirectory())
        throw new CliError(`${src.path} is a directory; cp copies files`, { hint: "tar it first" });
      data = await openAsBlob(src.path);
      if (target.endsWith("/")) target = `${target}${basename(src.path)}`;
    }
    const written = await sandbox.files.write(target, data, fileOptions);
    if (values.json) printJson(ctx.output, written);
    else {
      const seconds = (performance.now() - started) / 1000;
      ctx.output.err(`uploaded ${mib(written.size)} to ${dst.sandboxId}:${written.path} in ${seconds.toFixed(1)}s`);
    }
    return exitCodes.ok;
  }
  if (src.kind === "sandbox" && dst.kind === "local") {
    const sandbox = await Sandbox.connect(src.sandboxId, conn);
    let target = dst.path;
    if (target !== "-") {
      const info = await stat(target).catch(() => undefined);
      if (info?.isDirectory() || target.endsWith("/")) target = join(target, basename(src.path));
    }
    const body = await sandbox.files.read(src.path, { ...fileOptions, format: "stream" });
    let bytes = 0;
    const counted = body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          bytes += chunk.byteLength;
          controller.enqueue(chunk);
        },
      }),
    );
    const source = Readable.fromWeb(counted as NodeReadableStream<Uint8Array>);
    if (target === "-") await pipeline(source, process.stdout, { end: false });
    else await pipeline(source, createWriteStream(target));
    if (values.json) printJson(ctx.output, { path: target, size: bytes });
    else if (target !== "-") {
      const seconds = (performance.now() - started) / 1000;
      ctx.output.err(`downloaded ${mib(bytes)} to ${target} in ${seconds.toFixed(1)}s`);
    }
    return exitCodes.ok;
  }
  return exitCodes.usage;
}
