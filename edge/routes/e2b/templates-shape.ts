import { z } from "@hono/zod-openapi";
import { defaultE2bEnvdVersion } from "../../services/e2b/mapping.js";
import type { TemplateBuildRow, TemplateRow } from "../../services/templates/load.js";

/** E2B's `BuildLogEntry`. */
export const E2bBuildLogEntry = z
  .object({
    timestamp: z.string(),
    level: z.enum(["debug", "info", "warn", "error"]),
    message: z.string(),
    step: z.string().optional(),
  })
  .openapi("E2bBuildLogEntry");

/** E2B's `TemplateBuildInfo`: a build's status and its log entries from `logsOffset` on. */
export const E2bTemplateBuildInfo = z
  .object({
    templateID: z.string(),
    buildID: z.string(),
    status: z.enum(["building", "waiting", "ready", "error"]),
    logEntries: z.array(E2bBuildLogEntry),
    logs: z.array(z.string()),
    reason: z
      .object({ message: z.string(), step: z.string().optional(), logEntries: z.array(E2bBuildLogEntry) })
      .optional()
      .openapi({ description: "Why the build failed; `step` is the 1-based step, or `base`" }),
  })
  .openapi("E2bTemplateBuildInfo");

/** E2B's `Template` (list entries). */
export const E2bTemplate = z
  .object({
    templateID: z.string(),
    buildID: z.string(),
    aliases: z.array(z.string()),
    names: z.array(z.string()),
    public: z.boolean(),
    buildCount: z.number().int(),
    buildStatus: z.enum(["building", "waiting", "ready", "error"]),
    cpuCount: z.number().int(),
    memoryMB: z.number().int(),
    diskSizeMB: z.number().int(),
    envdVersion: z.string(),
    createdAt: z.string(),
    updatedAt: z.string(),
    createdBy: z.null(),
    lastSpawnedAt: z.string().nullable(),
    spawnCount: z.number().int(),
  })
  .openapi("E2bTemplate");

/** E2B's `TemplateBuild` (in a template's detail). */
export const E2bTemplateBuild = z
  .object({
    buildID: z.string(),
    status: z.enum(["building", "waiting", "ready", "error"]),
    cpuCount: z.number().int(),
    memoryMB: z.number().int(),
    createdAt: z.string(),
    updatedAt: z.string(),
    finishedAt: z.string().optional(),
  })
  .openapi("E2bTemplateBuild");

/** E2B's `TemplateWithBuilds`. */
export const E2bTemplateWithBuilds = z
  .object({
    templateID: z.string(),
    aliases: z.array(z.string()),
    names: z.array(z.string()),
    public: z.boolean(),
    createdAt: z.string(),
    updatedAt: z.string(),
    lastSpawnedAt: z.string().nullable(),
    spawnCount: z.number().int(),
    builds: z.array(E2bTemplateBuild),
  })
  .openapi("E2bTemplateWithBuilds");

/** A template row in E2B's `Template` form. */
export function toE2bTemplate(t: TemplateRow): z.infer<typeof E2bTemplate> {
  return {
    templateID: t.id,
    buildID: t.currentBuildId ?? "",
    aliases: [t.alias],
    names: [t.alias],
    public: t.public,
    buildCount: t.buildCount,
    buildStatus: t.currentBuildId ? "ready" : "building",
    cpuCount: t.vcpus,
    memoryMB: t.memoryMb,
    diskSizeMB: 0,
    envdVersion: defaultE2bEnvdVersion,
    createdAt: t.createdAt.toISOString(),
    updatedAt: t.updatedAt.toISOString(),
    createdBy: null,
    lastSpawnedAt: null,
    spawnCount: 0,
  };
}

/** A build row in E2B's `TemplateBuild` form. */
export function toE2bTemplateBuild(b: TemplateBuildRow): z.infer<typeof E2bTemplateBuild> {
  return {
    buildID: b.id,
    status: b.status,
    cpuCount: b.vcpus,
    memoryMB: b.memoryMb,
    createdAt: b.createdAt.toISOString(),
    updatedAt: b.updatedAt.toISOString(),
    ...(b.finishedAt ? { finishedAt: b.finishedAt.toISOString() } : {}),
  };
}

/** How many of the last log lines a failure's `reason` carries. */
const reasonLogLines = 20;

/**
 * A build's status in E2B's form, log entries from `logsOffset` on. A failure's `step` is E2B's:
 * the 1-based index of the failing step (the SDK points at that call of the builder), or `base`.
 */
export function toE2bBuildInfo(b: TemplateBuildRow, logsOffset: number): z.infer<typeof E2bTemplateBuildInfo> {
  const entries = b.logs.slice(Math.max(0, logsOffset));
  const info: z.infer<typeof E2bTemplateBuildInfo> = {
    templateID: b.templateId,
    buildID: b.id,
    status: b.status,
    logEntries: entries,
    logs: entries.map((e) => `[${e.timestamp}] ${e.message}`),
  };
  if (b.status === "error") {
    info.reason = {
      message: b.errorMessage ?? "the build failed",
      step: b.errorStep !== null && b.errorStep >= 0 ? String(b.errorStep + 1) : "base",
      logEntries: b.logs.slice(-reasonLogLines),
    };
  }
  return info;
}
