import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { auditActorTypes } from "../../contracts/accounts.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { listAudit } from "../../services/audit/list.js";

const AuditEntry = z
  .object({
    id: z.string(),
    teamId: z.string().nullable(),
    actor: z.object({
      type: z.enum(auditActorTypes),
      id: z.string().nullable().openapi({ description: "A user id or an API key id" }),
    }),
    action: z.string().openapi({ example: "api_key.create" }),
    object: z.object({ type: z.string().nullable(), id: z.string().nullable() }),
    at: z.string(),
    ip: z.string().nullable(),
    details: z.record(z.string(), z.unknown()),
  })
  .openapi("AuditEntry");

const route = createRoute({
  method: "get",
  path: "/",
  tags: ["audit"],
  operationId: "listAudit",
  summary: "The team's audit log, newest first",
  description:
    "Who did what to which object, when and from where (docs/accounts.md lists the actions). Instance admins and admin keys may pass `teamId`.",
  ...scoped("keys:read"),
  request: {
    query: z.object({
      teamId: z.string().min(1).max(64).optional(),
      action: z.string().min(1).max(64).optional(),
      actor: z.string().min(1).max(64).optional().openapi({ description: "A user id or an API key id" }),
      since: z.string().datetime({ offset: true }).optional(),
      cursor: z.string().max(24).optional().openapi({ description: "The previous page's nextCursor" }),
      limit: z.coerce.number().int().min(1).max(200).optional(),
    }),
  },
  responses: {
    200: {
      description: "A page of entries",
      content: {
        "application/json": {
          schema: z.object({ entries: z.array(AuditEntry), nextCursor: z.string().nullable() }),
        },
      },
    },
    ...openApiErrorResponses,
  },
});

/** GET /v1/audit */
export const registerListAudit = (app: App) =>
  app.openapi(route, async (c) => {
    const q = c.req.valid("query");
    const page = await listAudit(c.get("team"), {
      ...(q.teamId ? { teamId: q.teamId } : {}),
      ...(q.action ? { action: q.action } : {}),
      ...(q.actor ? { actorId: q.actor } : {}),
      ...(q.since ? { since: new Date(q.since) } : {}),
      ...(q.cursor ? { cursor: q.cursor } : {}),
      ...(q.limit ? { limit: q.limit } : {}),
    });
    return c.json(page, 200);
  });
