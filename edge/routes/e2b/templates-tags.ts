import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { buildStatus } from "../../services/templates/builds.js";
import { assignTags, removeTags, templateTags } from "../../services/templates/tags.js";
import { e2bErrorResponses } from "./errors.js";
import { E2bBuildLogEntry } from "./templates-shape.js";

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

const tagsRoute = createRoute({
  method: "get",
  path: "/templates/{templateID}/tags",
  tags: ["e2b"],
  operationId: "e2bTemplateTags",
  summary: "A template's tags and the build each names (E2B)",
  ...scoped("sandboxes:read"),
  request: { params: TemplateParam },
  responses: {
    200: json(
      z.array(z.object({ tag: z.string(), buildID: z.string(), createdAt: z.string() })).openapi("E2bTemplateTags"),
      "Tags",
    ),
    ...e2bErrorResponses,
  },
});

const assignRoute = createRoute({
  method: "post",
  path: "/templates/tags",
  tags: ["e2b"],
  operationId: "e2bAssignTemplateTags",
  summary: "Put tags on the build `target` names (`alias:tag`, or the current version of `alias`)",
  ...scoped("sandboxes:write"),
  request: {
    body: {
      required: true,
      content: {
        "application/json": {
          schema: z.object({ target: z.string().min(1).max(200), tags: z.array(z.string()).min(1).max(50) }),
        },
      },
    },
  },
  responses: {
    201: json(z.object({ buildID: z.string(), tags: z.array(z.string()) }), "Assigned"),
    ...e2bErrorResponses,
  },
});

const removeRoute = createRoute({
  method: "delete",
  path: "/templates/tags",
  tags: ["e2b"],
  operationId: "e2bRemoveTemplateTags",
  summary: "Take tags off a template's builds",
  ...scoped("sandboxes:write"),
  request: {
    body: {
      required: true,
      content: {
        "application/json": {
          schema: z.object({ name: z.string().min(1).max(200), tags: z.array(z.string()).min(1).max(50) }),
        },
      },
    },
  },
  responses: { 204: { description: "Removed" }, ...e2bErrorResponses },
});

const logsRoute = createRoute({
  method: "get",
  path: "/templates/{templateID}/builds/{buildID}/logs",
  tags: ["e2b"],
  operationId: "e2bTemplateBuildLogs",
  summary: "A build's log (E2B): from `cursor` (ms since the epoch) on, forward or backward, by level",
  ...scoped("sandboxes:read"),
  request: {
    params: TemplateParam.extend({
      buildID: z
        .string()
        .min(1)
        .max(64)
        .openapi({ param: { name: "buildID", in: "path" } }),
    }),
    query: z.object({
      cursor: z.coerce.number().int().min(0).optional(),
      direction: z.enum(["forward", "backward"]).default("forward"),
      level: z.enum(["debug", "info", "warn", "error"]).optional(),
      limit: z.coerce.number().int().min(1).max(10_000).default(100),
      source: z.string().optional(),
    }),
  },
  responses: { 200: json(z.object({ logs: z.array(E2bBuildLogEntry) }), "Log entries"), ...e2bErrorResponses },
});

const levels = ["debug", "info", "warn", "error"] as const;

/** E2B's template tags and build-log routes (`Template.assignTags`, `removeTags`, `getTags`). */
export const registerE2bTemplateTags = (app: App) => {
  app.openapi(tagsRoute, async (c) => {
    const tags = await templateTags(c.get("team"), c.req.valid("param").templateID);
    return c.json(
      tags.map((t) => ({ tag: t.tag, buildID: t.buildId, createdAt: t.createdAt.toISOString() })),
      200,
    );
  });
  app.openapi(assignRoute, async (c) => {
    const body = c.req.valid("json");
    const assigned = await assignTags(c.get("team"), body.target, body.tags);
    return c.json({ buildID: assigned.buildId, tags: assigned.tags }, 201);
  });
  app.openapi(removeRoute, async (c) => {
    const body = c.req.valid("json");
    await removeTags(c.get("team"), body.name, body.tags);
    return c.body(null, 204);
  });
  app.openapi(logsRoute, async (c) => {
    const { templateID, buildID } = c.req.valid("param");
    const q = c.req.valid("query");
    const build = await buildStatus(c.get("team"), templateID, buildID);
    const minLevel = q.level ? levels.indexOf(q.level) : 0;
    let lines = build.logs.filter((l) => levels.indexOf(l.level) >= minLevel);
    if (q.cursor !== undefined) {
      const cursor = q.cursor;
      lines = lines.filter((l) =>
        q.direction === "forward" ? Date.parse(l.timestamp) >= cursor : Date.parse(l.timestamp) <= cursor,
      );
    }
    const page = q.direction === "forward" ? lines.slice(0, q.limit) : lines.slice(-q.limit).reverse();
    return c.json({ logs: page }, 200);
  });
};
