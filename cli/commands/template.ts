import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { createExec } from "../../agent/exec.js";
import { noopLogger } from "../../lib/log.js";
import { type TemplateBuildInfo, type TemplateSpec, type TemplateStepSpec, Templates } from "../../sdk/templates.js";
import { commonOptions, parseCommand, usageError } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { CliError, exitCodes } from "../errors.js";
import { printJson, relativeTime, renderFields, renderTable } from "../output.js";

export const templateUsage = `usage: wrenn template <command> [options]

  build  [FILE]      build the template FILE describes (default ./wrenn.template.json), printing the
                     build's log as it runs; --no-wait starts it and prints its ids
  list               the team's templates and the public ones
  logs   <template> [build-id]
                     a build's log (default: the newest build); --follow until it ends
  delete <template>… on every host that built it

FILE is JSON: {"name": "my-app:v1", "from": {"template": "minimal"}, "steps": [{"run": "…"},
{"copy": {"src": "app", "dest": "/home/user/app"}}, {"env": {"K": "V"}}, {"workdir": "/app"},
{"user": "user"}], "startCmd": "…", "readyCmd": "…"}. A copy's src is a path next to FILE; it is
packed (tar + gzip) and uploaded first. Sandboxes start from a template by its name:
wrenn sandbox create my-app. The E2B SDK's Template builder works against the same API.

Every command takes --json, --api-url URL and --api-key KEY.`;

/** Steps as the spec file may write them: a copy may name `src` without the hash (packed here). */
type FileStep =
  | TemplateStepSpec
  | { copy: { src: string; dest: string; user?: string; mode?: string }; force?: boolean };

/** Packs a copy's source (relative to the spec's folder) with tar + gzip and uploads it; returns its hash. */
async function uploadCopy(
  ctx: CommandContext,
  baseDir: string,
  src: string,
  conn: Parameters<typeof Templates.uploadFiles>[1],
): Promise<string> {
  const full = resolve(baseDir, src);
  const rel = relative(baseDir, full);
  if (rel.startsWith("..") || isAbsolute(rel)) throw new CliError(`copy source ${src} is outside ${baseDir}`);
  const scratch = await mkdtemp(join(tmpdir(), "wrenn-template-"));
  try {
    const archive = join(scratch, "files.tar.gz");
    await createExec(noopLogger)("tar", ["-czf", archive, "-C", baseDir, rel], {
      signal: ctx.signal,
      timeoutMs: 300_000,
    });
    const bytes = await readFile(archive);
    return await Templates.uploadFiles(new Uint8Array(bytes), conn);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

function describe(b: TemplateBuildInfo): Array<[string, string]> {
  const fields: Array<[string, string]> = [
    ["build", b.id],
    ["template", b.templateId],
    ["status", b.status],
    ["host", b.hostId ?? "-"],
    ["cached steps", b.cachedSteps.length > 0 ? b.cachedSteps.join(", ") : "none"],
  ];
  if (b.error) fields.push(["error", `${b.error.message}${b.error.step >= 0 ? ` (step ${b.error.step})` : ""}`]);
  return fields;
}

/** `wrenn template …` */
export async function templateCommand(ctx: CommandContext, args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  const { values, positionals } = parseCommand(
    rest,
    {
      ...commonOptions,
      "no-wait": { type: "boolean", default: false },
      follow: { type: "boolean", short: "f", default: false },
    },
    templateUsage,
  );
  if (values.help || verb === "help") {
    ctx.output.out(templateUsage);
    return exitCodes.ok;
  }
  const printLine = (l: { timestamp: string; message: string }) =>
    ctx.output.out(`${l.timestamp.slice(11, 19)} ${l.message}`);
  switch (verb) {
    case "build": {
      if (positionals.length > 1) usageError("template build takes one spec file", templateUsage);
      const file = resolve(positionals[0] ?? "wrenn.template.json");
      let spec: TemplateSpec & { steps?: FileStep[] };
      try {
        spec = JSON.parse(await readFile(file, "utf8")) as typeof spec;
      } catch (err) {
        throw new CliError(`cannot read ${file}: ${(err as Error).message}`, { exitCode: exitCodes.usage });
      }
      const conn = await connection(ctx, values);
      const steps: TemplateStepSpec[] = [];
      for (const step of spec.steps ?? []) {
        if ("copy" in step && !("filesHash" in step.copy)) {
          const { src, ...copy } = step.copy;
          const filesHash = await uploadCopy(ctx, dirname(file), src, conn);
          if (!values.json) ctx.output.err(`uploaded ${src}`);
          steps.push({ ...step, copy: { ...copy, src, filesHash } });
        } else steps.push(step as TemplateStepSpec);
      }
      const started = await Templates.build({ ...spec, steps }, conn);
      if (values["no-wait"]) {
        if (values.json) printJson(ctx.output, started);
        else for (const line of renderFields(describe(started.build))) ctx.output.out(line);
        return exitCodes.ok;
      }
      const done = await Templates.waitForBuild(started.template.id, started.build.id, {
        ...conn,
        signal: ctx.signal,
        ...(values.json ? {} : { onLog: printLine }),
      });
      if (values.json) printJson(ctx.output, { template: started.template, build: { ...done, logs: [] } });
      else for (const line of renderFields(describe(done))) ctx.output.err(line);
      return done.status === "ready" ? exitCodes.ok : exitCodes.failure;
    }
    case "list":
    case "ls": {
      if (positionals.length > 0) usageError("template list takes no positional arguments", templateUsage);
      const templates = await Templates.list(await connection(ctx, values));
      if (values.json) {
        printJson(ctx.output, templates);
        return exitCodes.ok;
      }
      const now = new Date();
      for (const line of renderTable(templates, [
        { header: "id", value: (t) => t.id },
        { header: "name", value: (t) => t.alias },
        { header: "built", value: (t) => (t.currentBuildId ? "yes" : "no") },
        { header: "builds", value: (t) => String(t.buildCount) },
        { header: "public", value: (t) => (t.public ? (t.mine ? "yes" : "yes (other team)") : "no") },
        { header: "updated", value: (t) => relativeTime(t.updatedAt, now) },
      ]))
        ctx.output.out(line);
      return exitCodes.ok;
    }
    case "logs": {
      const [name, buildArg] = positionals;
      if (!name || positionals.length > 2)
        usageError("template logs takes a template and optionally a build id", templateUsage);
      const conn = await connection(ctx, values);
      const template = await Templates.get(name, conn);
      const buildId = buildArg ?? template.builds[0]?.id;
      if (!buildId) throw new CliError(`template ${name} has no builds`, { exitCode: exitCodes.notFound });
      const build = values.follow
        ? await Templates.waitForBuild(template.id, buildId, {
            ...conn,
            signal: ctx.signal,
            onLog: values.json ? undefined : printLine,
          })
        : await Templates.buildStatus(template.id, buildId, conn);
      if (values.json) printJson(ctx.output, build);
      else {
        if (!values.follow) for (const l of build.logs) printLine(l);
        for (const line of renderFields(describe(build))) ctx.output.err(line);
      }
      return exitCodes.ok;
    }
    case "delete":
    case "rm": {
      if (positionals.length === 0) usageError("template delete needs at least one template", templateUsage);
      const conn = await connection(ctx, values);
      for (const name of positionals) {
        await Templates.delete(name, conn);
        if (!values.json) ctx.output.err(`deleted ${name}`);
      }
      if (values.json) printJson(ctx.output, { deleted: positionals });
      return exitCodes.ok;
    }
    case undefined:
      ctx.output.err(templateUsage);
      return exitCodes.usage;
    default:
      usageError(`unknown template command ${JSON.stringify(verb)}`, templateUsage);
  }
}
