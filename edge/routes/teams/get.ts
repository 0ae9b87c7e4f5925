import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { getTeam, listTeams } from "../../services/teams/settings.js";
import { Team, TeamIdParam } from "./schemas.js";

const listRoute = createRoute({
  method: "get",
  path: "/",
  tags: ["teams"],
  operationId: "listTeams",
  summary: "List teams with their settings and usage (admin)",
  ...scoped("sandboxes:read"),
  responses: {
    200: { description: "Teams", content: { "application/json": { schema: z.object({ teams: z.array(Team) }) } } },
    ...openApiErrorResponses,
  },
});

const getRoute = createRoute({
  method: "get",
  path: "/{id}",
  tags: ["teams"],
  operationId: "getTeam",
  summary: "A team's isolation minimum, quotas and usage",
  description: "Any team for an admin key; a team key sees only its own (`me`).",
  ...scoped("sandboxes:read"),
  request: { params: TeamIdParam },
  responses: {
    200: { description: "The team", content: { "application/json": { schema: Team } } },
    ...openApiErrorResponses,
  },
});

/** GET /v1/teams (admin) and GET /v1/teams/{id} */
export const registerGetTeams = (app: App) => {
  app.openapi(listRoute, async (c) => {
    const team = c.get("team");
    if (!team.principal.isAdmin) {
      // A team key sees its own team only; answering with it (rather than 403) keeps `wrenn teams` useful.
      return c.json({ teams: [await getTeam(team, "me")] }, 200);
    }
    return c.json({ teams: await listTeams(team) }, 200);
  });
  app.openapi(getRoute, async (c) => c.json(await getTeam(c.get("team"), c.req.valid("param").id), 200));
};
