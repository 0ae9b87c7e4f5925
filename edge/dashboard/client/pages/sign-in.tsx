/** @jsxImportSource hono/jsx/dom */
import { useState } from "hono/jsx/dom";
import { describe, json } from "../api.js";
import { ErrorLine } from "../ui.js";

/** Sign-in by email and password; the same form signs up (the first user of an install, or any with WRENN_SIGNUP=open). */
export function SignInPage() {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const data = new FormData(form);
    const action = (e as SubmitEvent).submitter?.getAttribute("value") === "signup" ? "signup" : "login";
    setBusy(true);
    setError(null);
    try {
      await json("POST", `/v1/auth/${action}`, { email: data.get("email"), password: data.get("password") });
      const next = new URLSearchParams(location.search).get("next");
      location.assign(next?.startsWith("/dashboard") ? next : "/dashboard");
    } catch (err) {
      setError(describe(err));
      setBusy(false);
    }
  };
  return (
    <main class="sign-in">
      <h1>Sign in to Wrenn</h1>
      <form onSubmit={submit}>
        <label>
          Email
          <input name="email" type="email" autocomplete="username" required />
        </label>
        <label>
          Password
          <input name="password" type="password" autocomplete="current-password" minlength={10} required />
        </label>
        <ErrorLine error={error} />
        <div class="row">
          <button type="submit" value="login" disabled={busy}>
            Sign in
          </button>
          <button type="submit" value="signup" class="secondary" disabled={busy}>
            Create account
          </button>
        </div>
      </form>
    </main>
  );
}
