import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { LoginRateLimitedError } from "../../services/accounts/errors.js";
import { signUp } from "../../services/accounts/signup.js";
import { setSessionCookies } from "./cookies.js";
import { accountErrorResponses, Credentials, SessionInfo } from "./schemas.js";
import { sessionInfoFor } from "./session-info.js";

const route = createRoute({
  method: "post",
  path: "/signup",
  tags: ["auth"],
  operationId: "signUp",
  summary: "Sign up with an email and a password",
  description:
    "The first user of an install becomes the instance admin and owner of the admin key's team. Later sign-ups get a team of their own, or — with WRENN_SIGNUP=invite, the default — are refused (sign up through an invitation link instead). Sets the session and CSRF cookies.",
  "x-wrenn-public": true,
  request: { body: { required: true, content: { "application/json": { schema: Credentials } } } },
  responses: {
    201: { description: "Signed up and signed in", content: { "application/json": { schema: SessionInfo } } },
    ...openApiErrorResponses,
    ...accountErrorResponses,
  },
});

/** POST /v1/auth/signup */
export const registerSignUp = (app: App) =>
  app.openapi(route, async (c) => {
    const body = c.req.valid("json");
    let done: Awaited<ReturnType<typeof signUp>>;
    try {
      done = await signUp(c.get("services"), { ...body, userAgent: c.req.header("user-agent") });
    } catch (err) {
      if (err instanceof LoginRateLimitedError) c.header("Retry-After", String(err.retryAfterSec));
      throw err;
    }
    setSessionCookies(c, done.session);
    return c.json(await sessionInfoFor(c, done.user, done.session), 201);
  });
