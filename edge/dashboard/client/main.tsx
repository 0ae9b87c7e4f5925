/** @jsxImportSource hono/jsx/dom */
/**
 * The dashboard's client: one bundle (esbuild, scripts/build-dashboard.ts) rendering the page the edge
 * named in `<main data-page>` with Hono's DOM JSX. The edge's routes decide which page a URL is;
 * links are plain links, so there is no client-side router.
 */
import { render, useCallback, useEffect, useState } from "hono/jsx/dom";
import { json, type SessionInfo } from "./api.js";
import { AcceptInvitationPage } from "./pages/accept.js";
import { ApiKeysPage, AuditPage, TeamPage } from "./pages/admin.js";
import { HostsPage } from "./pages/hosts.js";
import { SandboxDetailPage } from "./pages/sandbox.js";
import { SandboxesPage } from "./pages/sandboxes.js";
import { SignInPage } from "./pages/sign-in.js";
import { Layout } from "./ui.js";

function App({ page, id }: { page: string; id: string }) {
  const [session, setSession] = useState<SessionInfo | null>(null);
  const load = useCallback(async () => {
    try {
      setSession(await json<SessionInfo>("GET", "/v1/auth/session"));
    } catch {
      location.assign(`/dashboard/sign-in?next=${encodeURIComponent(location.pathname)}`);
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);
  if (!session) return <p class="loading">Loading…</p>;
  const role = session.teams.find((t) => t.id === session.currentTeamId)?.role ?? "member";
  const canAdmin = role !== "member" || session.user.isInstanceAdmin;
  const body =
    page === "sandbox" ? (
      <SandboxDetailPage id={id} />
    ) : page === "keys" ? (
      <ApiKeysPage />
    ) : page === "team" ? (
      <TeamPage session={session} canAdmin={Boolean(canAdmin)} />
    ) : page === "audit" ? (
      <AuditPage />
    ) : page === "hosts" ? (
      <HostsPage />
    ) : (
      <SandboxesPage />
    );
  return (
    <Layout
      session={session}
      page={page}
      canAdmin={Boolean(canAdmin)}
      instanceAdmin={session.user.isInstanceAdmin === true}
    >
      {body}
    </Layout>
  );
}

const root = document.getElementById("app");
if (root) {
  const page = root.dataset.page ?? "sandboxes";
  const id = root.dataset.id ?? "";
  const signedOut = page === "sign-in" ? <SignInPage /> : page === "accept" ? <AcceptInvitationPage /> : null;
  render(signedOut ?? <App page={page} id={id} />, root);
}
