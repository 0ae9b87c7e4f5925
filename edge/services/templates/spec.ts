import { BadRequestError } from "../errors.js";

/** The instructions a build runs, in E2B's form (the agent's TemplateBuildStep takes them as they are). */
export const templateStepTypes = ["RUN", "COPY", "ENV", "WORKDIR", "USER"] as const;
export type TemplateStepType = (typeof templateStepTypes)[number];

/** One step: RUN [cmd, user?], COPY [src, dest, user?, mode?], ENV [k, v, …], WORKDIR [path], USER [name]. */
export interface TemplateStep {
  type: TemplateStepType;
  args: string[];
  force: boolean;
  /** COPY: sha256 (hex) of the uploaded archive. */
  filesHash?: string;
}

/** What a build makes, after the E2B body or Wrenn's /v1 spec was read. Stored on the build row. */
export interface TemplateBuildSpec {
  /** Start from this template: a built-in name, or a template id or alias the team sees. */
  fromTemplate?: string;
  /** Or from this OCI/Docker image reference. */
  fromImage?: string;
  fromImageRegistry?: { username: string; password: string };
  steps: TemplateStep[];
  startCmd?: string;
  readyCmd?: string;
  force: boolean;
}

/** The image E2B's `fromBaseImage()` names: E2B's base image, which is Wrenn's `minimal` template. */
const e2bBaseImage = /^(docker\.io\/)?e2bdev\/base(:latest)?$/;

/** At most this many steps in one build (the cache key of each covers every step before it). */
export const maxTemplateSteps = 200;

const sha256Pattern = /^[0-9a-f]{64}$/;

/** The fields of E2B's TemplateBuildStartV2 (POST /v2/templates/{id}/builds/{buildID}) that Wrenn reads. */
export interface E2bTemplateBuildBody {
  fromImage?: string | undefined;
  fromTemplate?: string | undefined;
  fromImageRegistry?:
    | { type?: string | undefined; username?: string | undefined; password?: string | undefined }
    | undefined;
  steps?:
    | Array<{ type: string; args?: string[] | undefined; force?: boolean | undefined; filesHash?: string | undefined }>
    | undefined;
  startCmd?: string | undefined;
  readyCmd?: string | undefined;
  force?: boolean | undefined;
}

/**
 * E2B's build body as a spec, checked: exactly one base, known step types, a sha256 on every COPY.
 * `fromImage("e2bdev/base")` (what `fromBaseImage()` sends) starts from `minimal`; registries that need
 * a cloud's own credentials (AWS, GCP) are refused clearly rather than pulled without them.
 */
export function specFromE2b(body: E2bTemplateBuildBody): TemplateBuildSpec {
  const steps: TemplateStep[] = (body.steps ?? []).map((s, i) => {
    const type = s.type.toUpperCase();
    if (!(templateStepTypes as readonly string[]).includes(type)) {
      throw new BadRequestError(`step ${i + 1}: unknown type ${JSON.stringify(s.type)}`, {
        [`steps.${i}.type`]: `one of ${templateStepTypes.join(", ")}`,
      });
    }
    const step: TemplateStep = { type: type as TemplateStepType, args: s.args ?? [], force: s.force ?? false };
    if (s.filesHash !== undefined && s.filesHash !== "") step.filesHash = s.filesHash;
    return step;
  });
  const spec: TemplateBuildSpec = { steps, force: body.force ?? false };
  if (body.fromTemplate) spec.fromTemplate = body.fromTemplate;
  if (body.fromImage) {
    if (e2bBaseImage.test(body.fromImage) && !body.fromImageRegistry) spec.fromTemplate = "minimal";
    else spec.fromImage = body.fromImage;
  }
  const registry = body.fromImageRegistry;
  if (registry) {
    if (registry.type !== undefined && registry.type !== "registry") {
      throw new BadRequestError(
        `fromImageRegistry type ${JSON.stringify(registry.type)} is not supported by Wrenn; use a registry with a username and password`,
        { "fromImageRegistry.type": "only 'registry'" },
      );
    }
    spec.fromImageRegistry = { username: registry.username ?? "", password: registry.password ?? "" };
  }
  if (body.startCmd) spec.startCmd = body.startCmd;
  if (body.readyCmd) spec.readyCmd = body.readyCmd;
  return checkSpec(spec);
}

/** Checks a spec from either surface; the same rules for both. */
export function checkSpec(spec: TemplateBuildSpec): TemplateBuildSpec {
  if ((spec.fromTemplate === undefined) === (spec.fromImage === undefined)) {
    throw new BadRequestError("a build starts from exactly one of a template and an image", {
      fromTemplate: "exactly one of fromTemplate and fromImage",
    });
  }
  if (spec.steps.length > maxTemplateSteps) {
    throw new BadRequestError(`a build has at most ${maxTemplateSteps} steps`, { steps: "too many" });
  }
  spec.steps.forEach((step, i) => {
    const field = `steps.${i}`;
    const bad = (what: string) => new BadRequestError(`step ${i + 1} (${step.type}): ${what}`, { [field]: what });
    switch (step.type) {
      case "RUN":
        if (!step.args[0]) throw bad("needs a command");
        break;
      case "COPY":
        if (step.args.length < 2 || !step.args[1]) throw bad("needs a source and a destination");
        if (!step.filesHash || !sha256Pattern.test(step.filesHash))
          throw bad("needs filesHash, the sha256 of the uploaded files");
        break;
      case "ENV":
        if (step.args.length === 0 || step.args.length % 2 !== 0) throw bad("needs key/value pairs");
        break;
      case "WORKDIR":
      case "USER":
        if (!step.args[0]) throw bad(`needs a ${step.type === "USER" ? "user name" : "path"}`);
        break;
    }
  });
  return spec;
}

/** The archives a spec's COPY steps need, each once. */
export function filesHashes(spec: TemplateBuildSpec): string[] {
  return [...new Set(spec.steps.flatMap((s) => (s.type === "COPY" && s.filesHash ? [s.filesHash] : [])))];
}
