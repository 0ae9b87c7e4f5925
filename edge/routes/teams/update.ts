import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { updateTeamSettings } from "../../services/teams/settings.js";
import { Team, TeamIdParam, UpdateTeamBody } from "./schemas.js";

const route = createRoute({
  method: "patch",
  path: "/{id}",
  tags: ["teams"],
  operationId: "updateTeam",
  summary: "Set a team's isolation minimum and quotas (admin)",
  description:
    "Fields left out stay as they are; null puts one back to the default. Lowering a limit below what the team holds refuses new admissions only.",
  ...scoped("admin"),
  request: {
    params: TeamIdParam,
    body: { required: true, content: { "application/json": { schema: UpdateTeamBody } } },
  },
  responses: {
    200: { description: "The team", content: { "application/json": { schema: Team } } },
    ...openApiErrorResponses,
  },
});

/** PATCH /v1/teams/{id} */
export const registerUpdateTeam = (app: App) =>
  app.openapi(route, async (c) =>
    c.json(await updateTeamSettings(c.get("team"), c.req.valid("param").id, c.req.valid("json")), 200),
  );
