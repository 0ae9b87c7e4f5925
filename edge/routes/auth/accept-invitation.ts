import { createRoute } from "@hono/zod-openapi";
import { getCookie } from "hono/cookie";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { sessionCookie } from "../../middleware/auth.js";
import { LoginRateLimitedError } from "../../services/accounts/errors.js";
import { acceptInvitation } from "../../services/accounts/invitations.js";
import { ServiceError } from "../../services/errors.js";
import { setSessionCookies } from "./cookies.js";
import { AcceptedInvitation, AcceptInvitationBody, accountErrorResponses } from "./schemas.js";
import { requireSession } from "./session.js";

const route = createRoute({
  method: "post",
  path: "/accept-invitation",
  tags: ["auth"],
  operationId: "acceptInvitation",
  summary: "Join a team with an invitation link's token",
  description:
    "Signed in (session cookie and X-CSRF-Token): the user joins the team, if the invitation is for their email. Not signed in: give `password` to sign up with the invitation's email; that sets the session cookies. Each link works once and for 7 days.",
  "x-wrenn-public": true,
  request: { body: { required: true, content: { "application/json": { schema: AcceptInvitationBody } } } },
  responses: {
    200: { description: "Joined", content: { "application/json": { schema: AcceptedInvitation } } },
    ...openApiErrorResponses,
    ...accountErrorResponses,
  },
});

/** POST /v1/auth/accept-invitation */
export const registerAcceptInvitation = (app: App) =>
  app.openapi(route, async (c) => {
    const body = c.req.valid("json");
    const services = c.get("services");
    if (getCookie(c, sessionCookie)) {
      const { session } = await requireSession(c);
      const done = await acceptInvitation(services, body.token, {
        kind: "user",
        userId: session.user.id,
        email: session.user.email,
      });
      return c.json({ teamId: done.teamId, role: done.role, userId: done.userId }, 200);
    }
    if (body.password === undefined) {
      throw new ServiceError("UNAUTHORIZED", "sign in first, or give a password to sign up with the invitation");
    }
    let done: Awaited<ReturnType<typeof acceptInvitation>>;
    try {
      done = await acceptInvitation(services, body.token, {
        kind: "signup",
        password: body.password,
        userAgent: c.req.header("user-agent"),
      });
    } catch (err) {
      if (err instanceof LoginRateLimitedError) c.header("Retry-After", String(err.retryAfterSec));
      throw err;
    }
    if (done.session) setSessionCookies(c, done.session);
    return c.json({ teamId: done.teamId, role: done.role, userId: done.userId }, 200);
  });
