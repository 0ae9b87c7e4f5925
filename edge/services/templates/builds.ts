import { timestampDate } from "@bufbuild/protobuf/wkt";
import { and, eq, sql } from "drizzle-orm";
import type { GetTemplateBuildResponse } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import { agentErrorToServiceError, agentMessageLimits, connectCodeOf } from "../../clients/agent.js";
import {
  type HostRow,
  hosts,
  type TemplateBuildLogLine,
  type TemplateBuildRow,
  type TemplateRow,
  templateBuilds,
  templates,
} from "../../db/schema/index.js";
import { recordAudit } from "../audit/record.js";
import type { ServiceContext, TeamContext } from "../context.js";
import { wrennTemplate } from "../e2b/mapping.js";
import { BadRequestError, ConflictError, ServiceError } from "../errors.js";
import { agentFor } from "../hosts/target.js";
import { pickHost } from "../scheduler/pick-host.js";
import { readFiles, sha256HexOf } from "./files.js";
import {
  findVisibleTemplate,
  loadOwnBuild,
  loadOwnTemplate,
  newBuildId,
  newTemplateId,
  parseTemplateName,
} from "./load.js";
import { checkSpec, filesHashes, type TemplateBuildSpec } from "./spec.js";

/** A build sandbox's size when the request names none (E2B's defaults: 2 vCPUs, 1 GiB). */
export const defaultBuildResources = { vcpus: 2, memoryMb: 1024 } as const;

/** Input of `requestBuild`: E2B's POST /v3/templates, or the first half of Wrenn's /v1 build. */
export interface RequestBuildInput {
  /** `alias` or `alias:tag`. */
  name: string;
  tags?: string[] | undefined;
  vcpus?: number | undefined;
  memoryMb?: number | undefined;
}

/** A template and one of its builds. */
export interface TemplateAndBuild {
  template: TemplateRow;
  build: TemplateBuildRow;
}

/**
 * Registers a build of the team's template `alias` (making the template on its first build) in state
 * `waiting`: nothing runs until `startBuild`, after the files are uploaded. Another team's alias is
 * another template: aliases are per team.
 */
export async function requestBuild(ctx: TeamContext, input: RequestBuildInput): Promise<TemplateAndBuild> {
  const { alias, tags } = parseTemplateName(input.name, input.tags ?? []);
  const teamId = ctx.principal.teamId;
  const vcpus = input.vcpus ?? defaultBuildResources.vcpus;
  const memoryMb = input.memoryMb ?? defaultBuildResources.memoryMb;
  const now = ctx.now();
  return ctx.db.transaction(async (tx) => {
    await tx
      .insert(templates)
      .values({ id: newTemplateId(), teamId, alias, vcpus, memoryMb, createdAt: now, updatedAt: now })
      .onConflictDoNothing({ target: [templates.teamId, templates.alias] });
    const [template] = await tx
      .update(templates)
      .set({ buildCount: sql`${templates.buildCount} + 1`, vcpus, memoryMb, updatedAt: now })
      .where(and(eq(templates.teamId, teamId), eq(templates.alias, alias)))
      .returning();
    if (!template) throw new Error("template row vanished inside its transaction");
    const [build] = await tx
      .insert(templateBuilds)
      .values({
        id: newBuildId(),
        templateId: template.id,
        teamId,
        status: "waiting",
        tags,
        vcpus,
        memoryMb,
        createdAt: now,
        updatedAt: now,
      })
      .returning();
    if (!build) throw new Error("insert into template_builds returned no row");
    await recordAudit(
      ctx,
      {
        action: "template.build",
        objectType: "template",
        objectId: template.id,
        details: { alias, buildId: build.id },
      },
      tx,
    );
    return { template, build };
  });
}

/** The agent template a build starts from, and the host placement it needs. */
async function resolveBase(
  ctx: TeamContext,
  spec: TemplateBuildSpec,
  self: TemplateRow,
): Promise<{ fromTemplate?: string; placeOn: string }> {
  if (spec.fromImage !== undefined) {
    // Any host can pull an image; `minimal` stands for "a host with Wrenn's base images installed".
    return { placeOn: "minimal" };
  }
  const name = spec.fromTemplate ?? "";
  const user = await findVisibleTemplate(ctx, name);
  if (user) {
    if (user.id === self.id) {
      if (user.currentBuildId === null) {
        throw new BadRequestError("a template cannot start from itself before it has been built", {
          fromTemplate: "not built",
        });
      }
    } else if (user.currentBuildId === null) {
      throw new BadRequestError(`template ${name} has no successful build yet`, { fromTemplate: "not built" });
    }
    return { fromTemplate: user.id, placeOn: user.id };
  }
  const builtIn = wrennTemplate(name);
  return { fromTemplate: builtIn, placeOn: builtIn };
}

/**
 * Starts a `waiting` build: checks the spec, picks a host that holds the base template (the
 * scheduler's capacity rules, for the build sandbox's size), reads the COPY archives the steps need,
 * and asks that agent to build. The agent answers at once; `buildStatus` polls it. Starting a build
 * that was started already is a 409. When the agent refuses, the build is recorded as failed with
 * the reason, so its status answers the same from then on.
 */
export async function startBuild(
  ctx: TeamContext,
  templateId: string,
  buildId: string,
  input: TemplateBuildSpec,
): Promise<TemplateAndBuild> {
  const spec = checkSpec(input);
  const build = await loadOwnBuild(ctx, templateId, buildId);
  const template = await loadOwnTemplate(ctx, build.templateId);
  if (build.status !== "waiting") throw new ConflictError(`build ${buildId} was started already (${build.status})`);
  const base = await resolveBase(ctx, spec, template);
  const stored = await readFiles(ctx, ctx.principal.teamId, filesHashes(spec));
  // The agent keys archives by the sha256 of their bytes (and checks it). E2B's files hash covers the
  // COPY line and the files rather than the tar, so each archive is re-keyed by its own digest here.
  const byContent = new Map<string, string>();
  const files: Record<string, Uint8Array> = {};
  for (const [hash, content] of Object.entries(stored)) {
    const digest = await sha256HexOf(new Uint8Array(content));
    byContent.set(hash, digest);
    files[digest] = content;
  }
  const total = Object.values(files).reduce((n, f) => n + f.length, 0);
  // The archives travel inline in one agent request, which the agent bounds.
  const room = agentMessageLimits.writeMaxBytes - 1024 ** 2;
  if (total > room) {
    throw new ServiceError(
      "PAYLOAD_TOO_LARGE",
      `the build's COPY archives total ${total} bytes; one build carries at most ${room} bytes of files`,
    );
  }
  const host = await pickHost(ctx, { template: base.placeOn, vcpus: build.vcpus, memoryMb: build.memoryMb });
  const now = ctx.now();
  const kept = {
    ...spec,
    ...(spec.fromImageRegistry
      ? { fromImageRegistry: { username: spec.fromImageRegistry.username, password: "" } }
      : {}),
  };
  const [claimed] = await ctx.db
    .update(templateBuilds)
    .set({
      status: "building",
      hostId: host.id,
      spec: kept as unknown as Record<string, unknown>,
      startedAt: now,
      updatedAt: now,
    })
    .where(and(eq(templateBuilds.id, build.id), eq(templateBuilds.status, "waiting")))
    .returning();
  if (!claimed) throw new ConflictError(`build ${buildId} was started already`);
  const agent = await agentFor(ctx, host);
  try {
    await agent.startTemplateBuild({
      buildId: build.id,
      template: template.id,
      fromTemplate: base.fromTemplate ?? "",
      fromImage: spec.fromImage ?? "",
      fromImageUsername: spec.fromImageRegistry?.username ?? "",
      fromImagePassword: spec.fromImageRegistry?.password ?? "",
      steps: spec.steps.map((s) => ({
        type: s.type,
        args: s.args,
        force: s.force,
        filesHash: s.filesHash ? (byContent.get(s.filesHash) ?? s.filesHash) : "",
      })),
      startCmd: spec.startCmd ?? "",
      readyCmd: spec.readyCmd ?? "",
      force: spec.force,
      files,
      vcpus: build.vcpus,
      memoryMb: build.memoryMb,
    });
  } catch (err) {
    const failure = agentErrorToServiceError(err, `starting the build on host ${host.id}`);
    ctx.logger.warn("template build did not start", { buildId: build.id, hostId: host.id, err });
    const failed = await finish(ctx, claimed, { status: "error", errorMessage: failure.message, errorStep: -1 });
    return { template, build: failed };
  }
  return { template, build: claimed };
}

/** What a finished build records. */
interface Finish {
  status: "ready" | "error";
  errorMessage?: string;
  errorStep?: number;
  logs?: TemplateBuildLogLine[];
  cachedSteps?: number[];
  finishedAt?: Date;
}

/**
 * Records a build's end (only over `building`, so two polls finishing it at once write it once). On
 * success the template's current version becomes this build, on the host that built it, and that
 * host's template list gains the template at once (the reconcile sweep would add it on its next
 * GetHostInfo), so a sandbox of it can be placed right away. A failure leaves the previous version.
 */
async function finish(ctx: ServiceContext, build: TemplateBuildRow, end: Finish): Promise<TemplateBuildRow> {
  const now = ctx.now();
  return ctx.db.transaction(async (tx) => {
    const [row] = await tx
      .update(templateBuilds)
      .set({
        status: end.status,
        errorMessage: end.errorMessage ?? null,
        errorStep: end.errorStep ?? null,
        ...(end.logs ? { logs: end.logs } : {}),
        ...(end.cachedSteps ? { cachedSteps: end.cachedSteps } : {}),
        finishedAt: end.finishedAt ?? now,
        updatedAt: now,
      })
      .where(and(eq(templateBuilds.id, build.id), eq(templateBuilds.status, "building")))
      .returning();
    if (!row) {
      const [current] = await tx.select().from(templateBuilds).where(eq(templateBuilds.id, build.id)).limit(1);
      return current ?? build;
    }
    if (end.status === "ready" && row.hostId !== null) {
      await tx
        .update(templates)
        .set({ currentBuildId: row.id, hostId: row.hostId, updatedAt: now })
        .where(eq(templates.id, row.templateId));
      await tx
        .update(hosts)
        .set({
          templates: sql`case when ${hosts.templates} ? ${row.templateId} then ${hosts.templates} else ${hosts.templates} || ${JSON.stringify([row.templateId])}::jsonb end`,
        })
        .where(eq(hosts.id, row.hostId));
    }
    return row;
  });
}

function logLine(e: GetTemplateBuildResponse["logEntries"][number]): TemplateBuildLogLine {
  const level = (["debug", "info", "warn", "error"] as const).find((l) => l === e.level) ?? "info";
  return {
    timestamp: (e.timestamp ? timestampDate(e.timestamp) : new Date()).toISOString(),
    level,
    message: e.message,
  };
}

/**
 * A build's state for a status request: while it is `building`, first asks its host (log entries from
 * what is stored on) and stores what changed, so the row holds the whole log and the end, and answers
 * the same after the agent has forgotten the build. An agent that cannot be reached leaves the row as
 * it was (the next poll asks again); one that no longer knows the build (restarted) fails it.
 */
export async function buildStatus(ctx: TeamContext, templateId: string, buildId: string): Promise<TemplateBuildRow> {
  const build = await loadOwnBuild(ctx, templateId, buildId);
  if (build.status !== "building" || build.hostId === null) {
    if (build.status === "building") {
      return finish(ctx, build, {
        status: "error",
        errorMessage: "the host that ran the build was deleted",
        errorStep: -1,
      });
    }
    return build;
  }
  return pollAgent(ctx, build);
}

async function pollAgent(ctx: ServiceContext, build: TemplateBuildRow): Promise<TemplateBuildRow> {
  const [host] = await ctx.db
    .select()
    .from(hosts)
    .where(eq(hosts.id, build.hostId ?? ""))
    .limit(1);
  if (!host)
    return finish(ctx, build, {
      status: "error",
      errorMessage: "the host that ran the build was deleted",
      errorStep: -1,
    });
  let answer: GetTemplateBuildResponse;
  try {
    const agent = await agentFor(ctx, host as HostRow);
    answer = await agent.getTemplateBuild({ buildId: build.id, logsOffset: build.logs.length });
  } catch (err) {
    const code = agentErrorToServiceError(err, "polling the build").code;
    if (code === "NOT_FOUND") {
      return finish(ctx, build, {
        status: "error",
        errorMessage: `host ${host.id} no longer knows the build (the agent restarted?)`,
        errorStep: -1,
      });
    }
    ctx.logger.warn("polling a template build failed", {
      buildId: build.id,
      hostId: host.id,
      code: connectCodeOf(err),
    });
    return build;
  }
  // Entries past what is stored only: an answer from an older offset (a racing poll) adds nothing twice.
  const logs = [...build.logs, ...answer.logEntries.map(logLine)];
  const cachedSteps = [...answer.cachedSteps];
  if (answer.status === "ready" || answer.status === "error") {
    return finish(ctx, build, {
      status: answer.status,
      logs,
      cachedSteps,
      ...(answer.status === "error"
        ? { errorMessage: answer.errorMessage || "the build failed", errorStep: answer.errorStep }
        : {}),
      ...(answer.finishedAt ? { finishedAt: timestampDate(answer.finishedAt) } : {}),
    });
  }
  if (answer.logEntries.length === 0) return build;
  const [row] = await ctx.db
    .update(templateBuilds)
    .set({ logs, cachedSteps, updatedAt: ctx.now() })
    .where(
      and(
        eq(templateBuilds.id, build.id),
        eq(templateBuilds.status, "building"),
        sql`jsonb_array_length(${templateBuilds.logs}) = ${build.logs.length}`,
      ),
    )
    .returning();
  if (row) return row;
  const [current] = await ctx.db.select().from(templateBuilds).where(eq(templateBuilds.id, build.id)).limit(1);
  return current ?? build;
}
