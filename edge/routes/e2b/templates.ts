import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { buildStatus, requestBuild, startBuild } from "../../services/templates/builds.js";
import { fileUploadGrant, readArchiveBody, storeUploadedFile } from "../../services/templates/files.js";
import { listBuilds, loadVisibleTemplate } from "../../services/templates/load.js";
import { listTemplates, setTemplatePublic } from "../../services/templates/manage.js";
import { specFromE2b } from "../../services/templates/spec.js";
import { e2bErrorResponses } from "./errors.js";
import {
  E2bTemplate,
  E2bTemplateBuildInfo,
  E2bTemplateWithBuilds,
  toE2bBuildInfo,
  toE2bTemplate,
  toE2bTemplateBuild,
} from "./templates-shape.js";

const json = <T extends z.ZodTypeAny>(schema: T, description: string) => ({
  description,
  content: { "application/json": { schema } },
});

const TemplateParam = z.object({
  templateID: z
    .string()
    .min(1)
    .max(200)
    .openapi({ param: { name: "templateID", in: "path" } }),
});
const BuildParams = TemplateParam.extend({
  buildID: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: "buildID", in: "path" } }),
});
const HashParams = TemplateParam.extend({
  hash: z
    .string()
    .min(1)
    .max(128)
    .openapi({ param: { name: "hash", in: "path" } }),
});

/** E2B's `TemplateBuildRequestV3`. */
const E2bTemplateBuildRequest = z
  .object({
    name: z.string().min(1).max(200).optional(),
    alias: z.string().min(1).max(200).optional().openapi({ description: "Deprecated: use name" }),
    tags: z.array(z.string()).max(50).optional(),
    cpuCount: z.number().int().min(1).max(64).optional(),
    memoryMB: z.number().int().min(128).max(262_144).optional(),
    minFreeDiskMb: z.number().int().optional(),
    teamID: z.string().optional(),
  })
  .openapi("E2bTemplateBuildRequestV3");

/** E2B's `TemplateRequestResponseV3`. */
const E2bTemplateRequestResponse = z
  .object({
    templateID: z.string(),
    buildID: z.string(),
    aliases: z.array(z.string()),
    names: z.array(z.string()),
    tags: z.array(z.string()),
    public: z.boolean(),
  })
  .openapi("E2bTemplateRequestResponseV3");

/** E2B's `TemplateBuildStartV2`. The SDK sends its own extra step fields (gzip…); they are ignored. */
const E2bTemplateBuildStart = z
  .object({
    fromImage: z.string().max(500).optional(),
    fromTemplate: z.string().max(200).optional(),
    fromImageRegistry: z
      .object({ type: z.string().optional(), username: z.string().optional(), password: z.string().optional() })
      .passthrough()
      .optional(),
    steps: z
      .array(
        z
          .object({
            type: z.string().min(1).max(20),
            args: z.array(z.string().max(65_536)).max(1000).optional(),
            force: z.boolean().optional(),
            filesHash: z.string().max(128).optional(),
          })
          .passthrough(),
      )
      .optional(),
    startCmd: z.string().max(65_536).optional(),
    readyCmd: z.string().max(65_536).optional(),
    force: z.boolean().optional(),
  })
  .openapi("E2bTemplateBuildStartV2");

const E2bFileUpload = z
  .object({ present: z.boolean(), url: z.string().optional() })
  .openapi("E2bTemplateBuildFileUpload");

const requestRoute = createRoute({
  method: "post",
  path: "/v3/templates",
  tags: ["e2b"],
  operationId: "e2bRequestTemplateBuild",
  summary: "Request a template build (E2B v3)",
  description:
    "Makes the team's template `name` (`alias` or `alias:tag`) on its first build and registers a build of it; nothing runs until the build is started.",
  ...scoped("sandboxes:write"),
  request: { body: { required: true, content: { "application/json": { schema: E2bTemplateBuildRequest } } } },
  responses: { 202: json(E2bTemplateRequestResponse, "The build, waiting for its start"), ...e2bErrorResponses },
});

const fileLinkRoute = createRoute({
  method: "get",
  path: "/templates/{templateID}/files/{hash}",
  tags: ["e2b"],
  operationId: "e2bTemplateFileUploadLink",
  summary: "Whether a COPY archive is uploaded, and if not where to PUT it (E2B)",
  description:
    "The link carries a sealed token good for 15 minutes; the upload needs no API key. Archives are kept per team, at most WRENN_TEMPLATE_FILE_MAX_BYTES (default 64 MiB) each.",
  ...scoped("sandboxes:write"),
  request: { params: HashParams },
  responses: { 201: json(E2bFileUpload, "Present, or the upload link"), ...e2bErrorResponses },
});

const uploadRoute = createRoute({
  method: "put",
  path: "/template-files/{hash}",
  tags: ["e2b"],
  operationId: "e2bTemplateFileUpload",
  summary: "Upload a COPY archive to a link from GET /templates/{templateID}/files/{hash}",
  request: {
    params: z.object({
      hash: z
        .string()
        .min(1)
        .max(128)
        .openapi({ param: { name: "hash", in: "path" } }),
    }),
    query: z.object({ token: z.string().min(1).max(2000) }),
  },
  responses: {
    200: { description: "Stored" },
    400: e2bErrorResponses[400],
    404: json(z.object({ code: z.number(), message: z.string() }), "No such link, or it expired"),
    413: json(z.object({ code: z.number(), message: z.string() }), "Larger than WRENN_TEMPLATE_FILE_MAX_BYTES"),
  },
});

const startRoute = createRoute({
  method: "post",
  path: "/v2/templates/{templateID}/builds/{buildID}",
  tags: ["e2b"],
  operationId: "e2bStartTemplateBuild",
  summary: "Start a requested build (E2B v2)",
  description:
    "Checks the steps, picks a host that holds the base template, and starts the build there. Poll the status for logs.",
  ...scoped("sandboxes:write"),
  request: {
    params: BuildParams,
    body: { required: true, content: { "application/json": { schema: E2bTemplateBuildStart } } },
  },
  responses: { 202: json(z.object({}), "Started"), 409: e2bErrorResponses[400], ...e2bErrorResponses },
});

const statusRoute = createRoute({
  method: "get",
  path: "/templates/{templateID}/builds/{buildID}/status",
  tags: ["e2b"],
  operationId: "e2bTemplateBuildStatus",
  summary: "A build's status and log entries from logsOffset on (E2B)",
  ...scoped("sandboxes:read"),
  request: {
    params: BuildParams,
    query: z.object({
      logsOffset: z.coerce.number().int().min(0).default(0),
      limit: z.coerce.number().int().min(1).max(10_000).optional(),
      level: z.string().optional(),
    }),
  },
  responses: { 200: json(E2bTemplateBuildInfo, "The build"), ...e2bErrorResponses },
});

const aliasRoute = createRoute({
  method: "get",
  path: "/templates/aliases/{alias}",
  tags: ["e2b"],
  operationId: "e2bTemplateAlias",
  summary: "The template an alias names (the team's own first, then a public one)",
  ...scoped("sandboxes:read"),
  request: {
    params: z.object({
      alias: z
        .string()
        .min(1)
        .max(200)
        .openapi({ param: { name: "alias", in: "path" } }),
    }),
  },
  responses: {
    200: json(z.object({ templateID: z.string(), public: z.boolean() }).openapi("E2bTemplateAliasResponse"), "Found"),
    ...e2bErrorResponses,
  },
});

const listRoute = (path: string, operationId: string) =>
  createRoute({
    method: "get",
    path,
    tags: ["e2b"],
    operationId,
    summary: "The team's templates and the public ones (E2B)",
    ...scoped("sandboxes:read"),
    request: {
      query: z.object({
        teamID: z.string().optional(),
        limit: z.string().optional(),
        nextToken: z.string().optional(),
      }),
    },
    responses: { 200: json(z.array(E2bTemplate), "Templates"), ...e2bErrorResponses },
  });

const getRoute = createRoute({
  method: "get",
  path: "/templates/{templateID}",
  tags: ["e2b"],
  operationId: "e2bGetTemplate",
  summary: "A template with its builds (E2B)",
  ...scoped("sandboxes:read"),
  request: { params: TemplateParam },
  responses: { 200: json(E2bTemplateWithBuilds, "The template"), ...e2bErrorResponses },
});

const updateRoute = (path: string, operationId: string) =>
  createRoute({
    method: "patch",
    path,
    tags: ["e2b"],
    operationId,
    summary: "Make a template public or private (E2B); publishing needs an admin key",
    ...scoped("sandboxes:write"),
    request: {
      params: TemplateParam,
      body: {
        required: true,
        content: { "application/json": { schema: z.object({ public: z.boolean().optional() }) } },
      },
    },
    responses: { 200: json(z.object({ names: z.array(z.string()) }), "Updated"), ...e2bErrorResponses },
  });

/**
 * E2B's template build API (what the `e2b` SDK's `Template.build()` calls): request, file links and
 * uploads, start, status with logs, aliases, list, get, update. DELETE /templates/{id} is shared with
 * snapshots (edge/routes/e2b/snapshots.ts).
 */
export const registerE2bTemplates = (app: App) => {
  app.openapi(requestRoute, async (c) => {
    const body = c.req.valid("json");
    const name = body.name ?? body.alias;
    const { template, build } = await requestBuild(c.get("team"), {
      name: name ?? "",
      tags: body.tags,
      vcpus: body.cpuCount,
      memoryMb: body.memoryMB,
    });
    return c.json(
      {
        templateID: template.id,
        buildID: build.id,
        aliases: [template.alias],
        names: [template.alias],
        tags: build.tags,
        public: template.public,
      },
      202,
    );
  });
  app.openapi(fileLinkRoute, async (c) => {
    const { templateID, hash } = c.req.valid("param");
    const grant = await fileUploadGrant(c.get("team"), templateID, hash);
    if (grant.present) return c.json({ present: true }, 201);
    const url = new URL(`/template-files/${hash}`, c.req.url);
    url.searchParams.set("token", grant.token);
    return c.json({ present: false, url: url.toString() }, 201);
  });
  app.openapi(uploadRoute, async (c) => {
    const services = c.get("services");
    const content = await readArchiveBody(services, c.req.raw);
    const declared = c.req.header("x-content-sha256");
    await storeUploadedFile(services, c.req.valid("query").token, c.req.valid("param").hash, content, declared);
    return c.body(null, 200);
  });
  app.openapi(startRoute, async (c) => {
    const { templateID, buildID } = c.req.valid("param");
    await startBuild(c.get("team"), templateID, buildID, specFromE2b(c.req.valid("json")));
    // A JSON body, not an empty one: the SDK's client parses every 2xx but 204 as JSON.
    return c.json({}, 202);
  });
  app.openapi(statusRoute, async (c) => {
    const { templateID, buildID } = c.req.valid("param");
    const build = await buildStatus(c.get("team"), templateID, buildID);
    return c.json(toE2bBuildInfo(build, c.req.valid("query").logsOffset), 200);
  });
  app.openapi(aliasRoute, async (c) => {
    const template = await loadVisibleTemplate(c.get("team"), c.req.valid("param").alias);
    return c.json({ templateID: template.id, public: template.public }, 200);
  });
  for (const [path, id] of [
    ["/templates", "e2bListTemplates"],
    ["/v2/templates", "e2bListTemplatesV2"],
  ] as const) {
    app.openapi(listRoute(path, id), async (c) => c.json((await listTemplates(c.get("team"))).map(toE2bTemplate), 200));
  }
  app.openapi(getRoute, async (c) => {
    const team = c.get("team");
    const template = await loadVisibleTemplate(team, c.req.valid("param").templateID);
    const builds = template.teamId === team.principal.teamId ? await listBuilds(team, template.id) : [];
    return c.json(
      {
        templateID: template.id,
        aliases: [template.alias],
        names: [template.alias],
        public: template.public,
        createdAt: template.createdAt.toISOString(),
        updatedAt: template.updatedAt.toISOString(),
        lastSpawnedAt: null,
        spawnCount: 0,
        builds: builds.map(toE2bTemplateBuild),
      },
      200,
    );
  });
  for (const [path, id] of [
    ["/templates/{templateID}", "e2bUpdateTemplate"],
    ["/v2/templates/{templateID}", "e2bUpdateTemplateV2"],
  ] as const) {
    app.openapi(updateRoute(path, id), async (c) => {
      const team = c.get("team");
      const body = c.req.valid("json");
      const { templateID } = c.req.valid("param");
      const template =
        body.public === undefined
          ? await loadVisibleTemplate(team, templateID)
          : await setTemplatePublic(team, templateID, body.public);
      return c.json({ names: [template.alias] }, 200);
    });
  }
};
