import { type CommandInfo, listCommandHistory, searchCommands } from "../../sdk/command-history.js";
import { ApiClient } from "../../sdk/http.js";
import { commonOptions, parseCommand, usageError, wholeNumber } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { exitCodes } from "../errors.js";
import { type Column, printJson, renderTable } from "../output.js";
import { sandboxUsage } from "./sandbox.js";

/** A command line cut to one table cell. */
function cell(text: string, max: number): string {
  const line = text.replaceAll(/\s+/g, " ");
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

const kib = (bytes: number) => (bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KiB`);

const columns: Column<CommandInfo>[] = [
  { header: "started", value: (c) => c.startedAt },
  { header: "exit", value: (c) => (c.exitCode === null ? "running" : String(c.exitCode)) },
  { header: "time", value: (c) => (c.durationMs === null ? "-" : `${(c.durationMs / 1000).toFixed(1)}s`) },
  { header: "out/err", value: (c) => `${kib(c.stdout.bytes)}/${kib(c.stderr.bytes)}` },
  { header: "id", value: (c) => c.commandId },
  { header: "command", value: (c) => cell(c.commandLine, 80) },
];

/**
 * `wrenn sandbox history <id> [--search Q] [--limit N] [--output]`: the commands the sandbox ran,
 * newest first (also after it ended); `--search` does a full-text search of their command lines and
 * output instead; `--output` prints each command's output head and tail under it.
 */
export async function history(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    { ...commonOptions, search: { type: "string" }, limit: { type: "string" }, output: { type: "boolean" } },
    sandboxUsage,
  );
  if (values.help) {
    ctx.output.out(sandboxUsage);
    return exitCodes.ok;
  }
  const id = positionals[0];
  if (!id || positionals.length > 1) usageError("sandbox history takes one sandbox id", sandboxUsage);
  const limit = wholeNumber(values.limit, "--limit") ?? 50;
  const conn = await connection(ctx, values);
  const commands: CommandInfo[] = [];
  let nextToken: string | undefined;
  do {
    const page =
      values.search !== undefined
        ? await searchCommands(values.search, { ...conn, sandboxId: id, limit: Math.min(limit, 200), nextToken })
        : await listCommandHistory(new ApiClient(conn), id, { limit: Math.min(limit, 200), nextToken });
    commands.push(...page.commands);
    nextToken = page.nextToken ?? undefined;
  } while (nextToken && commands.length < limit);
  const shown = commands.slice(0, limit);
  if (values.json) {
    printJson(ctx.output, shown);
    return exitCodes.ok;
  }
  if (!values.output) {
    for (const line of renderTable(shown, columns)) ctx.output.out(line);
    return exitCodes.ok;
  }
  for (const c of shown) {
    ctx.output.out(`${c.commandId}  exit ${c.exitCode ?? "running"}  ${c.startedAt}  ${cell(c.commandLine, 120)}`);
    for (const [name, s] of [
      ["stdout", c.stdout],
      ["stderr", c.stderr],
    ] as const) {
      if (s.bytes === 0) continue;
      const skipped = s.bytes - Buffer.byteLength(s.head) - Buffer.byteLength(s.tail);
      ctx.output.out(`--- ${name} (${s.bytes} bytes)`);
      ctx.output.out(s.head.replace(/\n$/, ""));
      if (s.tail !== "") {
        if (skipped > 0) ctx.output.out(`… ${skipped} bytes not kept …`);
        ctx.output.out(s.tail.replace(/\n$/, ""));
      }
    }
  }
  return exitCodes.ok;
}
