import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { listMembers, removeMember, setMemberRole } from "../../services/accounts/members.js";
import { TeamRoleSchema } from "../auth/schemas.js";
import { TeamIdParam } from "./schemas.js";

/** A member of a team. */
export const Member = z
  .object({ userId: z.string(), email: z.string(), role: TeamRoleSchema, joinedAt: z.string() })
  .openapi("TeamMember");

const MemberParams = TeamIdParam.extend({
  userId: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: "userId", in: "path" }, example: "usr_0123456789abcdef" }),
});

const listRoute = createRoute({
  method: "get",
  path: "/{id}/members",
  tags: ["teams"],
  operationId: "listTeamMembers",
  summary: "A team's members and their roles",
  description: "Any member of the team may list it; another team is not found (admins excepted).",
  ...scoped("sandboxes:read"),
  request: { params: TeamIdParam },
  responses: {
    200: {
      description: "The members",
      content: { "application/json": { schema: z.object({ members: z.array(Member) }) } },
    },
    ...openApiErrorResponses,
  },
});

const patchRoute = createRoute({
  method: "patch",
  path: "/{id}/members/{userId}",
  tags: ["teams"],
  operationId: "setTeamMemberRole",
  summary: "Change a member's role",
  description: "Owners set any role; admins move people between admin and member. The last owner keeps the role (409).",
  ...scoped("keys:write"),
  request: {
    params: MemberParams,
    body: {
      required: true,
      content: { "application/json": { schema: z.object({ role: TeamRoleSchema }).strict() } },
    },
  },
  responses: {
    200: { description: "The member", content: { "application/json": { schema: Member } } },
    ...openApiErrorResponses,
  },
});

const deleteRoute = createRoute({
  method: "delete",
  path: "/{id}/members/{userId}",
  tags: ["teams"],
  operationId: "removeTeamMember",
  summary: "Remove a member from a team",
  description:
    "Owners remove anyone, admins anyone but owners, and a signed-in member may leave (remove themselves). The last owner cannot be removed (409).",
  // Any member may leave; who may remove others is the service's check (owner/admin role or keys:write).
  ...scoped("sandboxes:read"),
  request: { params: MemberParams },
  responses: { 204: { description: "Removed" }, ...openApiErrorResponses },
});

/** GET/PATCH/DELETE /v1/teams/{id}/members[/{userId}] */
export const registerTeamMembers = (app: App) => {
  app.openapi(listRoute, async (c) =>
    c.json({ members: await listMembers(c.get("team"), c.req.valid("param").id) }, 200),
  );
  app.openapi(patchRoute, async (c) => {
    const { id, userId } = c.req.valid("param");
    return c.json(await setMemberRole(c.get("team"), id, userId, c.req.valid("json").role), 200);
  });
  app.openapi(deleteRoute, async (c) => {
    const { id, userId } = c.req.valid("param");
    await removeMember(c.get("team"), id, userId);
    return c.body(null, 204);
  });
};
