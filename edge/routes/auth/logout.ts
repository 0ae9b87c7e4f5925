import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { logOut } from "../../services/accounts/login.js";
import { clearSessionCookies } from "./cookies.js";
import { requireSession } from "./session.js";

const route = createRoute({
  method: "post",
  path: "/logout",
  tags: ["auth"],
  operationId: "logOut",
  summary: "Sign out: revoke the session and clear its cookies",
  description: "Needs the session cookie and the X-CSRF-Token header.",
  "x-wrenn-public": true,
  responses: { 204: { description: "Signed out" }, ...openApiErrorResponses },
});

/** POST /v1/auth/logout */
export const registerLogOut = (app: App) =>
  app.openapi(route, async (c) => {
    const { session, principal } = await requireSession(c);
    await logOut(c.get("services"), {
      sessionId: session.id,
      userId: session.user.id,
      teamId: principal?.teamId ?? null,
    });
    clearSessionCookies(c);
    return c.body(null, 204);
  });
