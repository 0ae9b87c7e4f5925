import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { createInvitation, listInvitations, revokeInvitation } from "../../services/accounts/invitations.js";
import { Email, TeamRoleSchema } from "../auth/schemas.js";
import { TeamIdParam } from "./schemas.js";

/** A pending invitation (never its token). */
const Invitation = z
  .object({
    id: z.string(),
    teamId: z.string(),
    email: z.string(),
    role: TeamRoleSchema,
    invitedBy: z.string().openapi({ description: "The user (or API key) that invited" }),
    createdAt: z.string(),
    expiresAt: z.string(),
  })
  .openapi("Invitation");

const CreatedInvitation = Invitation.extend({
  token: z.string().openapi({ description: "Shown once: the link's token, for POST /v1/auth/accept-invitation" }),
  acceptPath: z.string().openapi({ description: "Path of the dashboard's accept page, token included" }),
}).openapi("CreatedInvitation");

const createRouteDef = createRoute({
  method: "post",
  path: "/{id}/invitations",
  tags: ["teams"],
  operationId: "createTeamInvitation",
  summary: "Invite someone into a team by link",
  description:
    "Answers a one-time token (shown once, stored hashed, valid 7 days) to hand to the invitee; it works only for the invited email. Only owners invite owners. Email delivery is not built yet.",
  ...scoped("keys:write"),
  request: {
    params: TeamIdParam,
    body: {
      required: true,
      content: { "application/json": { schema: z.object({ email: Email, role: TeamRoleSchema }).strict() } },
    },
  },
  responses: {
    201: {
      description: "The invitation and its token",
      content: { "application/json": { schema: CreatedInvitation } },
    },
    ...openApiErrorResponses,
  },
});

const listRoute = createRoute({
  method: "get",
  path: "/{id}/invitations",
  tags: ["teams"],
  operationId: "listTeamInvitations",
  summary: "A team's pending invitations",
  ...scoped("keys:write"),
  request: { params: TeamIdParam },
  responses: {
    200: {
      description: "Pending invitations",
      content: { "application/json": { schema: z.object({ invitations: z.array(Invitation) }) } },
    },
    ...openApiErrorResponses,
  },
});

const revokeRoute = createRoute({
  method: "delete",
  path: "/{id}/invitations/{invitationId}",
  tags: ["teams"],
  operationId: "revokeTeamInvitation",
  summary: "Revoke a pending invitation",
  ...scoped("keys:write"),
  request: {
    params: TeamIdParam.extend({
      invitationId: z
        .string()
        .min(1)
        .max(64)
        .openapi({ param: { name: "invitationId", in: "path" } }),
    }),
  },
  responses: { 204: { description: "Revoked" }, ...openApiErrorResponses },
});

/** POST/GET/DELETE /v1/teams/{id}/invitations */
export const registerTeamInvitations = (app: App) => {
  app.openapi(createRouteDef, async (c) => {
    const created = await createInvitation(c.get("team"), c.req.valid("param").id, c.req.valid("json"));
    return c.json({ ...created, acceptPath: `/invitations/accept#token=${created.token}` }, 201);
  });
  app.openapi(listRoute, async (c) =>
    c.json({ invitations: await listInvitations(c.get("team"), c.req.valid("param").id) }, 200),
  );
  app.openapi(revokeRoute, async (c) => {
    const { id, invitationId } = c.req.valid("param");
    await revokeInvitation(c.get("team"), id, invitationId);
    return c.body(null, 204);
  });
};
