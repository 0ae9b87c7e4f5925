import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { CodeResult } from "../../sdk/code.js";
import { Sandbox } from "../../sdk/sandbox.js";
import { commonOptions, durationSeconds, keyValues, parseCommand, usageError } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { CliError, exitCodes } from "../errors.js";
import { printJson } from "../output.js";

const runCodeUsage = `usage: wrenn sandbox run-code <id> (--file x.py | --code SRC | --file -) [options]

  Runs Python in a code-interpreter sandbox (wrenn sandbox create --template code-interpreter)
  and prints its output as it comes. Text results go to stdout; images (PNG, JPEG, SVG) are saved
  as files, with a chart's data beside each figure as JSON.

  --file F         the code to run (- for stdin)
  --code SRC       the code, inline
  --context ID     run in this context (default: the sandbox's default Python context)
  --env K=V        environment variable for this run (repeatable)
  --out-dir DIR    where images go (default .)
  --timeout 60s    interrupt the code after this long (default 60s)
  --json           print the whole execution as JSON instead`;

const imageFormats = [
  ["png", "png", "base64"],
  ["jpeg", "jpg", "base64"],
  ["svg", "svg", "utf8"],
] as const;

/** `wrenn sandbox run-code`: exit code 1 when the code raised. */
export async function runCode(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    {
      ...commonOptions,
      file: { type: "string", short: "f" },
      code: { type: "string", short: "c" },
      context: { type: "string" },
      env: { type: "string", short: "e", multiple: true },
      "out-dir": { type: "string" },
      timeout: { type: "string" },
    },
    runCodeUsage,
  );
  if (values.help) {
    ctx.output.out(runCodeUsage);
    return exitCodes.ok;
  }
  if (positionals.length !== 1) usageError("sandbox run-code takes one sandbox id", runCodeUsage);
  if ((values.file === undefined) === (values.code === undefined)) {
    usageError("give the code with exactly one of --file or --code", runCodeUsage);
  }
  let code = values.code ?? "";
  if (values.file === "-") code = await readStdin();
  else if (values.file !== undefined) {
    const file = values.file;
    code = await readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => {
      throw new CliError(`cannot read ${file}: ${err.code === "ENOENT" ? "no such file" : err.message}`);
    });
  }
  const timeoutSec = durationSeconds(values.timeout, "--timeout") ?? 60;
  const outDir = values["out-dir"] ?? ".";
  const sandbox = await Sandbox.connect(positionals[0] ?? "", await connection(ctx, values));
  const stream = !values.json;
  const execution = await sandbox.runCode(code, {
    ...(values.context ? { context: values.context } : {}),
    envs: keyValues(values.env, "--env"),
    timeoutMs: timeoutSec * 1000,
    signal: ctx.signal,
    ...(stream
      ? {
          onStdout: (text: string) => void process.stdout.write(text),
          onStderr: (text: string) => void process.stderr.write(text),
        }
      : {}),
  });
  if (values.json) {
    printJson(ctx.output, { ...execution, text: execution.text });
    return execution.error ? 1 : exitCodes.ok;
  }
  let n = 0;
  for (const result of execution.results) {
    n++;
    const saved = await saveImages(result, outDir, `result-${execution.executionCount ?? 0}-${n}`);
    for (const path of saved) ctx.output.err(`saved ${path}`);
    if (saved.length === 0 && result.text !== undefined) ctx.output.out(result.text);
  }
  if (execution.error) {
    ctx.output.err(execution.error.traceback || `${execution.error.name}: ${execution.error.value}`);
    return 1;
  }
  return exitCodes.ok;
}

/** Writes a result's images (and its chart data) to files; returns their paths. */
async function saveImages(result: CodeResult, dir: string, stem: string): Promise<string[]> {
  const paths: string[] = [];
  for (const [field, ext, encoding] of imageFormats) {
    const value = result[field];
    if (typeof value !== "string") continue;
    const path = join(dir, `${stem}.${ext}`);
    // --out-dir names a directory that may not exist yet.
    if (paths.length === 0) await mkdir(dir, { recursive: true });
    await writeFile(path, Buffer.from(value, encoding));
    paths.push(path);
  }
  if (paths.length > 0 && result.chart) {
    const path = join(dir, `${stem}.chart.json`);
    await writeFile(path, `${JSON.stringify(result.chart, null, 2)}\n`);
    paths.push(path);
  }
  return paths;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}
