import type { App } from "../../context.js";
import { newRouter } from "../router.js";
import { registerAcceptInvitation } from "./accept-invitation.js";
import { registerLogIn } from "./login.js";
import { registerLogOut } from "./logout.js";
import { registerGetSession } from "./session.js";
import { registerSignUp } from "./signup.js";

/**
 * The /v1/auth router: sign-up, sign-in, sign-out, the session, accepting invitations. It sits
 * outside the /v1 authentication middleware (nobody is signed in yet when signing in); the routes
 * that need a session check it themselves, CSRF header included (docs/accounts.md).
 */
export function authRouter(): App {
  const app = newRouter();
  registerSignUp(app);
  registerLogIn(app);
  registerLogOut(app);
  registerGetSession(app);
  registerAcceptInvitation(app);
  return app;
}
