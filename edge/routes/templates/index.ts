import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { buildStatus } from "../../services/templates/builds.js";
import { readArchiveBody, storeTeamFile } from "../../services/templates/files.js";
import { listBuilds, loadVisibleTemplate } from "../../services/templates/load.js";
import { deleteTemplate, listTemplates } from "../../services/templates/manage.js";
import { buildFromSpec } from "../../services/templates/v1.js";
import { newRouter } from "../router.js";
import {
  Template,
  TemplateBuild,
  TemplateBuildSpecBody,
  TemplateIdParam,
  TemplateWithBuilds,
  toTemplate,
  toTemplateBuild,
} from "./schemas.js";

const json = <T extends z.ZodTypeAny>(schema: T, description: string) => ({
  description,
  content: { "application/json": { schema } },
});

const listRoute = createRoute({
  method: "get",
  path: "/",
  tags: ["templates"],
  operationId: "listTemplates",
  summary: "The team's templates and the public ones",
  ...scoped("sandboxes:read"),
  responses: { 200: json(z.object({ templates: z.array(Template) }), "Templates"), ...openApiErrorResponses },
});

const getRoute = createRoute({
  method: "get",
  path: "/{id}",
  tags: ["templates"],
  operationId: "getTemplate",
  summary: "A template with its builds (newest first) and their logs",
  description: "A public template of another team shows no builds.",
  ...scoped("sandboxes:read"),
  request: { params: TemplateIdParam },
  responses: { 200: json(TemplateWithBuilds, "The template"), ...openApiErrorResponses },
});

const buildRoute = createRoute({
  method: "post",
  path: "/builds",
  tags: ["templates"],
  operationId: "buildTemplate",
  summary: "Build a template from a spec",
  description:
    "Makes the team's template `name` on its first build, picks a host that holds the base and starts the build there; poll GET /v1/templates/{id}/builds/{buildId} for its progress and logs. COPY steps name archives uploaded first with PUT /v1/templates/files/{sha256}.",
  ...scoped("sandboxes:write"),
  request: { body: { required: true, content: { "application/json": { schema: TemplateBuildSpecBody } } } },
  responses: {
    202: json(z.object({ template: Template, build: TemplateBuild }), "Started (or failed at once, see build.status)"),
    ...openApiErrorResponses,
    ...openApiAgentErrorResponses,
  },
});

const buildStatusRoute = createRoute({
  method: "get",
  path: "/{id}/builds/{buildId}",
  tags: ["templates"],
  operationId: "getTemplateBuild",
  summary: "A build's status and its log from logsOffset on (asks the build's host while it runs)",
  ...scoped("sandboxes:read"),
  request: {
    params: TemplateIdParam.extend({
      buildId: z
        .string()
        .min(1)
        .max(64)
        .openapi({ param: { name: "buildId", in: "path" } }),
    }),
    query: z.object({ logsOffset: z.coerce.number().int().min(0).default(0) }),
  },
  responses: { 200: json(TemplateBuild, "The build"), ...openApiErrorResponses },
});

const uploadRoute = createRoute({
  method: "put",
  path: "/files/{hash}",
  tags: ["templates"],
  operationId: "uploadTemplateFiles",
  summary: "Upload a COPY archive (a tar, optionally gzipped) under the sha256 of its bytes",
  description: "The hash must be the archive's sha256 (400 otherwise); at most WRENN_TEMPLATE_FILE_MAX_BYTES (413).",
  ...scoped("sandboxes:write"),
  request: {
    params: z.object({
      hash: z
        .string()
        .min(1)
        .max(128)
        .openapi({ param: { name: "hash", in: "path" } }),
    }),
  },
  responses: {
    201: json(z.object({ hash: z.string(), created: z.boolean() }), "Stored (created: false when it was already)"),
    ...openApiErrorResponses,
  },
});

const deleteRoute = createRoute({
  method: "delete",
  path: "/{id}",
  tags: ["templates"],
  operationId: "deleteTemplate",
  summary: "Delete one of the team's templates, on every host that built it",
  ...scoped("sandboxes:write"),
  request: { params: TemplateIdParam },
  responses: { 204: { description: "Deleted" }, ...openApiErrorResponses, ...openApiAgentErrorResponses },
});

/** /v1/templates: templates users build (docs/templates.md). */
export function templatesRouter(): App {
  const app = newRouter();
  app.openapi(listRoute, async (c) => {
    const team = c.get("team");
    const rows = await listTemplates(team);
    return c.json({ templates: rows.map((t) => toTemplate(t, team.principal.teamId)) }, 200);
  });
  app.openapi(buildRoute, async (c) => {
    const team = c.get("team");
    const { template, build } = await buildFromSpec(team, c.req.valid("json"));
    return c.json({ template: toTemplate(template, team.principal.teamId), build: toTemplateBuild(build) }, 202);
  });
  app.openapi(uploadRoute, async (c) => {
    const team = c.get("team");
    const { hash } = c.req.valid("param");
    const { created } = await storeTeamFile(team, hash, await readArchiveBody(team, c.req.raw));
    return c.json({ hash, created }, 201);
  });
  app.openapi(getRoute, async (c) => {
    const team = c.get("team");
    const template = await loadVisibleTemplate(team, c.req.valid("param").id);
    const mine = template.teamId === team.principal.teamId;
    const builds = mine ? await listBuilds(team, template.id) : [];
    return c.json(
      { ...toTemplate(template, team.principal.teamId), builds: builds.map((b) => toTemplateBuild(b)) },
      200,
    );
  });
  app.openapi(buildStatusRoute, async (c) => {
    const { id, buildId } = c.req.valid("param");
    const build = await buildStatus(c.get("team"), id, buildId);
    return c.json(toTemplateBuild(build, c.req.valid("query").logsOffset), 200);
  });
  app.openapi(deleteRoute, async (c) => {
    await deleteTemplate(c.get("team"), c.req.valid("param").id);
    return c.body(null, 204);
  });
  return app;
}
