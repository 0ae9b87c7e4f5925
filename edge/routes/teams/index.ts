import type { App } from "../../context.js";
import { newRouter } from "../router.js";
import { registerGetTeams } from "./get.js";
import { registerUpdateTeam } from "./update.js";

/** The /v1/teams router: settings and quotas per team (changes need an admin key). */
export function teamsRouter(): App {
  const app = newRouter();
  registerGetTeams(app);
  registerUpdateTeam(app);
  return app;
}
