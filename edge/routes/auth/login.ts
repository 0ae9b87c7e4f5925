import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { LoginRateLimitedError } from "../../services/accounts/errors.js";
import { logIn } from "../../services/accounts/login.js";
import { userById } from "../../services/accounts/sessions.js";
import { setSessionCookies } from "./cookies.js";
import { accountErrorResponses, Credentials, SessionInfo } from "./schemas.js";
import { sessionInfoFor } from "./session-info.js";

const route = createRoute({
  method: "post",
  path: "/login",
  tags: ["auth"],
  operationId: "logIn",
  summary: "Sign in with an email and a password",
  description:
    "Sets the session cookie (`wrenn_session`, HttpOnly) and the CSRF cookie (`wrenn_csrf`). A wrong password and an unknown email answer the same 401. Attempts are limited per email and per client address (429 with Retry-After).",
  "x-wrenn-public": true,
  request: { body: { required: true, content: { "application/json": { schema: Credentials } } } },
  responses: {
    200: { description: "Signed in", content: { "application/json": { schema: SessionInfo } } },
    ...openApiErrorResponses,
    ...accountErrorResponses,
  },
});

/** POST /v1/auth/login */
export const registerLogIn = (app: App) =>
  app.openapi(route, async (c) => {
    const services = c.get("services");
    let done: Awaited<ReturnType<typeof logIn>>;
    try {
      done = await logIn(services, { ...c.req.valid("json"), userAgent: c.req.header("user-agent") });
    } catch (err) {
      if (err instanceof LoginRateLimitedError) c.header("Retry-After", String(err.retryAfterSec));
      throw err;
    }
    setSessionCookies(c, done.session);
    const user = await userById(services.db, done.userId);
    return c.json(await sessionInfoFor(c, user, done.session), 200);
  });
