import type { Context } from "hono";
import { deleteCookie, setCookie } from "hono/cookie";
import type { AppEnv } from "../../context.js";
import { csrfCookie, requestIsTls, sessionCookie } from "../../middleware/auth.js";
import { accountSettings, type NewSession } from "../../services/accounts/sessions.js";

/**
 * Sets the session cookie (HttpOnly: no script reads it) and the CSRF cookie (readable, so the
 * page can copy it into X-CSRF-Token). Both SameSite=Lax and, over TLS, Secure. The cookies carry
 * no Max-Age beyond the session's absolute end; the server decides when the session ends.
 */
export function setSessionCookies(c: Context<AppEnv>, session: NewSession): void {
  const secure = requestIsTls(c, accountSettings(c.get("services")).trustProxy);
  const expires = new Date(c.get("services").now().getTime() + accountSettings(c.get("services")).sessionAbsoluteMs);
  setCookie(c, sessionCookie, session.token, { httpOnly: true, sameSite: "Lax", secure, path: "/", expires });
  setCookie(c, csrfCookie, session.csrfToken, { httpOnly: false, sameSite: "Lax", secure, path: "/", expires });
}

/** Clears both cookies (sign-out). */
export function clearSessionCookies(c: Context<AppEnv>): void {
  const secure = requestIsTls(c, accountSettings(c.get("services")).trustProxy);
  deleteCookie(c, sessionCookie, { path: "/", secure, httpOnly: true, sameSite: "Lax" });
  deleteCookie(c, csrfCookie, { path: "/", secure, sameSite: "Lax" });
}
