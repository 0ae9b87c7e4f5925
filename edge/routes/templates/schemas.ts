import { z } from "@hono/zod-openapi";
import type { TemplateBuildRow, TemplateRow } from "../../services/templates/load.js";

const force = z.boolean().optional().openapi({ description: "Run this step even when the cache holds it" });

/** One step of a build spec: exactly one of run, copy, env, workdir, user. */
export const TemplateStepSpec = z
  .union([
    z.object({ run: z.string().min(1).max(65_536), user: z.string().max(64).optional(), force }).strict(),
    z
      .object({
        copy: z
          .object({
            filesHash: z
              .string()
              .regex(/^[0-9a-f]{64}$/)
              .openapi({ description: "sha256 of the uploaded tar" }),
            dest: z.string().min(1).max(4096),
            src: z.string().max(4096).optional(),
            user: z.string().max(64).optional(),
            mode: z
              .string()
              .regex(/^[0-7]{3,4}$/)
              .optional(),
          })
          .strict(),
        force,
      })
      .strict(),
    z.object({ env: z.record(z.string(), z.string().max(65_536)), force }).strict(),
    z.object({ workdir: z.string().min(1).max(4096), force }).strict(),
    z.object({ user: z.string().min(1).max(64), force }).strict(),
  ])
  .openapi("TemplateStepSpec");

/** Wrenn's template build spec (also the form of a `wrenn.template.json` file). */
export const TemplateBuildSpecBody = z
  .object({
    name: z.string().min(1).max(200).openapi({ example: "my-app:v1", description: "`alias` or `alias:tag`" }),
    tags: z.array(z.string()).max(50).optional(),
    from: z
      .object({
        template: z.string().max(200).optional().openapi({ example: "minimal" }),
        image: z.string().max(500).optional().openapi({ example: "registry.example:5000/app:1" }),
        username: z.string().max(500).optional(),
        password: z.string().max(5000).optional(),
      })
      .openapi({ description: "Exactly one of template and image" }),
    steps: z.array(TemplateStepSpec).max(200).optional(),
    startCmd: z.string().max(65_536).optional(),
    readyCmd: z.string().max(65_536).optional(),
    force: z.boolean().optional().openapi({ description: "Skip the cache for every step" }),
    vcpus: z.number().int().min(1).max(64).optional(),
    memoryMb: z.number().int().min(128).max(262_144).optional(),
  })
  .openapi("TemplateBuildSpec");

const LogLine = z
  .object({ timestamp: z.string(), level: z.string(), message: z.string() })
  .openapi("TemplateBuildLogLine");

/** A build, with its log from `logsOffset` on. */
export const TemplateBuild = z
  .object({
    id: z.string(),
    templateId: z.string(),
    status: z.enum(["waiting", "building", "ready", "error"]),
    hostId: z.string().nullable(),
    tags: z.array(z.string()),
    cachedSteps: z.array(z.number().int()),
    error: z.object({ message: z.string(), step: z.number().int() }).nullable(),
    logCount: z.number().int(),
    logs: z.array(LogLine),
    createdAt: z.string(),
    startedAt: z.string().nullable(),
    finishedAt: z.string().nullable(),
  })
  .openapi("TemplateBuild");

export const Template = z
  .object({
    id: z.string(),
    alias: z.string(),
    public: z.boolean(),
    mine: z.boolean().openapi({ description: "Whether it is the caller's team's (else a public one)" }),
    currentBuildId: z.string().nullable(),
    buildCount: z.number().int(),
    vcpus: z.number().int(),
    memoryMb: z.number().int(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi("Template");

export const TemplateWithBuilds = Template.extend({ builds: z.array(TemplateBuild) }).openapi("TemplateWithBuilds");

export const TemplateIdParam = z.object({
  id: z
    .string()
    .min(1)
    .max(200)
    .openapi({ param: { name: "id", in: "path" }, description: "Template id or alias" }),
});

export function toTemplate(t: TemplateRow, teamId: string): z.infer<typeof Template> {
  return {
    id: t.id,
    alias: t.alias,
    public: t.public,
    mine: t.teamId === teamId,
    currentBuildId: t.currentBuildId,
    buildCount: t.buildCount,
    vcpus: t.vcpus,
    memoryMb: t.memoryMb,
    createdAt: t.createdAt.toISOString(),
    updatedAt: t.updatedAt.toISOString(),
  };
}

export function toTemplateBuild(b: TemplateBuildRow, logsOffset = 0): z.infer<typeof TemplateBuild> {
  return {
    id: b.id,
    templateId: b.templateId,
    status: b.status,
    hostId: b.hostId,
    tags: b.tags,
    cachedSteps: b.cachedSteps,
    error: b.status === "error" ? { message: b.errorMessage ?? "the build failed", step: b.errorStep ?? -1 } : null,
    logCount: b.logs.length,
    logs: b.logs.slice(Math.max(0, logsOffset)),
    createdAt: b.createdAt.toISOString(),
    startedAt: b.startedAt?.toISOString() ?? null,
    finishedAt: b.finishedAt?.toISOString() ?? null,
  };
}
