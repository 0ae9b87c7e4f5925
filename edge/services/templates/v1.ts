import type { TeamContext } from "../context.js";
import { BadRequestError } from "../errors.js";
import { requestBuild, startBuild, type TemplateAndBuild } from "./builds.js";
import { checkSpec, type TemplateBuildSpec, type TemplateStep } from "./spec.js";

/** One step of Wrenn's own build spec (`wrenn template build`, POST /v1/templates/builds). */
export type WrennTemplateStep =
  | { run: string; user?: string | undefined; force?: boolean | undefined }
  | {
      copy: {
        filesHash: string;
        dest: string;
        src?: string | undefined;
        user?: string | undefined;
        mode?: string | undefined;
      };
      force?: boolean | undefined;
    }
  | { env: Record<string, string>; force?: boolean | undefined }
  | { workdir: string; force?: boolean | undefined }
  | { user: string; force?: boolean | undefined };

/** Wrenn's build spec: a template name, a base, steps, and the start command. */
export interface WrennTemplateSpec {
  /** `alias` or `alias:tag`. */
  name: string;
  tags?: string[] | undefined;
  from: {
    template?: string | undefined;
    image?: string | undefined;
    username?: string | undefined;
    password?: string | undefined;
  };
  steps?: WrennTemplateStep[] | undefined;
  startCmd?: string | undefined;
  readyCmd?: string | undefined;
  force?: boolean | undefined;
  vcpus?: number | undefined;
  memoryMb?: number | undefined;
}

/** A Wrenn step as the E2B instruction the agent runs. */
function toStep(s: WrennTemplateStep, i: number): TemplateStep {
  const force = s.force ?? false;
  if ("run" in s) return { type: "RUN", args: s.user ? [s.run, s.user] : [s.run], force };
  if ("copy" in s) {
    const c = s.copy;
    return { type: "COPY", args: [c.src ?? ".", c.dest, c.user ?? "", c.mode ?? ""], force, filesHash: c.filesHash };
  }
  if ("env" in s) return { type: "ENV", args: Object.entries(s.env).flat(), force };
  if ("workdir" in s) return { type: "WORKDIR", args: [s.workdir], force };
  if ("user" in s) return { type: "USER", args: [s.user], force };
  throw new BadRequestError(`step ${i + 1}: one of run, copy, env, workdir, user`, { [`steps.${i}`]: "unknown step" });
}

/** Wrenn's spec as the build spec both surfaces share. */
export function specFromWrenn(spec: WrennTemplateSpec): TemplateBuildSpec {
  const out: TemplateBuildSpec = { steps: (spec.steps ?? []).map(toStep), force: spec.force ?? false };
  if (spec.from.template) out.fromTemplate = spec.from.template;
  if (spec.from.image) out.fromImage = spec.from.image;
  if (spec.from.username || spec.from.password) {
    out.fromImageRegistry = { username: spec.from.username ?? "", password: spec.from.password ?? "" };
  }
  if (spec.startCmd) out.startCmd = spec.startCmd;
  if (spec.readyCmd) out.readyCmd = spec.readyCmd;
  return checkSpec(out);
}

/**
 * Builds a template from Wrenn's spec in one call: the spec is checked before anything is recorded,
 * then the build is registered and started (the COPY archives must have been uploaded first, with
 * PUT /v1/templates/files/{sha256}).
 */
export async function buildFromSpec(ctx: TeamContext, spec: WrennTemplateSpec): Promise<TemplateAndBuild> {
  const checked = specFromWrenn(spec);
  const { template, build } = await requestBuild(ctx, {
    name: spec.name,
    tags: spec.tags,
    vcpus: spec.vcpus,
    memoryMb: spec.memoryMb,
  });
  return startBuild(ctx, template.id, build.id, checked);
}
