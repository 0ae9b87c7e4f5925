import type { App } from "../../context.js";
import { newRouter } from "../router.js";
import { registerGetTeams } from "./get.js";
import { registerTeamInvitations } from "./invitations.js";
import { registerTeamMembers } from "./members.js";
import { registerUpdateTeam } from "./update.js";

/** The /v1/teams router: settings and quotas per team (changes need an admin key), members and invitations. */
export function teamsRouter(): App {
  const app = newRouter();
  registerGetTeams(app);
  registerUpdateTeam(app);
  registerTeamMembers(app);
  registerTeamInvitations(app);
  return app;
}
