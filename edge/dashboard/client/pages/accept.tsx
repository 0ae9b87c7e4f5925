/** @jsxImportSource hono/jsx/dom */
import { useEffect, useState } from "hono/jsx/dom";
import { describe, json, type SessionInfo } from "../api.js";
import { ErrorLine } from "../ui.js";

/**
 * The invitation link (`/invitations/accept#token=…`; the token rides in the fragment, so it never
 * reaches a server log). Signed in: one click joins the team. Not signed in: choosing a password
 * makes the account for the invited email and joins.
 */
export function AcceptInvitationPage() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token") ?? "";
  const [session, setSession] = useState<SessionInfo | null | undefined>(undefined);
  const [error, setError] = useState<string | null>(token ? null : "This link has no invitation token.");
  useEffect(() => {
    json<SessionInfo>("GET", "/v1/auth/session").then(setSession, () => setSession(null));
  }, []);
  const accept = async (e: Event) => {
    e.preventDefault();
    const password = new FormData(e.currentTarget as HTMLFormElement).get("password");
    try {
      await json("POST", "/v1/auth/accept-invitation", session ? { token } : { token, password });
      location.assign("/dashboard");
    } catch (err) {
      setError(describe(err));
    }
  };
  return (
    <main class="sign-in">
      <h1>Join a team on Wrenn</h1>
      <ErrorLine error={error} />
      {session === undefined ? (
        <p>Loading…</p>
      ) : (
        <form onSubmit={accept}>
          {session ? (
            <p>You are signed in as {session.user.email}.</p>
          ) : (
            <label>
              Choose a password
              <input name="password" type="password" autocomplete="new-password" minlength={10} required />
            </label>
          )}
          <button type="submit" disabled={!token}>
            Accept the invitation
          </button>
        </form>
      )}
    </main>
  );
}
