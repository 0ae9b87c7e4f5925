import type { Context } from "hono";
import type { AppEnv } from "../../context.js";
import { teamsOf } from "../../services/accounts/sessions.js";

/** The SessionInfo body for a user who just signed in (or up). */
export async function sessionInfoFor(
  c: Context<AppEnv>,
  user: { id: string; email: string; isInstanceAdmin: boolean },
  session: { csrfToken: string; expiresAt: Date },
) {
  const teams = await teamsOf(c.get("services").db, user.id);
  return {
    user: { id: user.id, email: user.email, isInstanceAdmin: user.isInstanceAdmin },
    teams: teams.map((t) => ({ id: t.teamId, name: t.name, role: t.role })),
    currentTeamId: teams[0]?.teamId ?? null,
    csrfToken: session.csrfToken,
    expiresAt: session.expiresAt.toISOString(),
  };
}
