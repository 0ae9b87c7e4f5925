import { createRoute } from "@hono/zod-openapi";
import type { Context } from "hono";
import { getCookie } from "hono/cookie";
import type { App, AppEnv } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { csrfHeader, sessionCookie, teamHeader } from "../../middleware/auth.js";
import { authenticateSession, type SessionAuthentication } from "../../services/auth/authenticate.js";
import { ServiceError } from "../../services/errors.js";
import { SessionInfo } from "./schemas.js";

/**
 * The request's session, checked as the /v1 middleware checks it (CSRF header on methods that
 * change something); UNAUTHORIZED without one. For the account routes, which sit outside that middleware.
 */
export async function requireSession(c: Context<AppEnv>): Promise<SessionAuthentication> {
  const token = getCookie(c, sessionCookie);
  if (!token) throw new ServiceError("UNAUTHORIZED", "sign in first (no session cookie)");
  const safe = c.req.method === "GET" || c.req.method === "HEAD";
  return authenticateSession(c.get("services"), token, {
    csrfToken: safe ? null : (c.req.header(csrfHeader) ?? ""),
    team: c.req.header(teamHeader),
  });
}

const route = createRoute({
  method: "get",
  path: "/session",
  tags: ["auth"],
  operationId: "getSession",
  summary: "Who am I: the signed-in user, their teams and roles",
  description: "Needs the session cookie. `currentTeamId` is the team requests act in (X-Wrenn-Team, else the first).",
  "x-wrenn-public": true,
  responses: {
    200: { description: "The session", content: { "application/json": { schema: SessionInfo } } },
    ...openApiErrorResponses,
  },
});

/** GET /v1/auth/session */
export const registerGetSession = (app: App) =>
  app.openapi(route, async (c) => {
    const { session, teams, principal } = await requireSession(c);
    return c.json(
      {
        user: session.user,
        teams: teams.map((t) => ({ id: t.teamId, name: t.name, role: t.role })),
        currentTeamId: principal?.teamId ?? null,
        csrfToken: session.csrfToken,
        expiresAt: session.expiresAt.toISOString(),
      },
      200,
    );
  });
