import type { Context } from "hono";
import type { App, AppEnv, DocsAssets } from "../../context.js";
import { newRouter } from "../router.js";

/** Files the dashboard's pages load; anything else under /dashboard/assets is 404. */
const assetNames = new Set(["app.js", "terminal.js", "app.css"]);

// The page runs only our own script and talks only to this origin; frames of it are refused
// (clickjacking). Styles may be inline: xterm.js's renderer puts its theme in a <style> element,
// and no script can be injected through a style.
const contentSecurityPolicy =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/** The HTML every dashboard page starts from; the client bundle renders `page` into #app. */
function Shell({ page, id, title }: { page: string; id?: string; title: string }) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="color-scheme" content="light dark" />
        <title>{`${title} · Wrenn`}</title>
        {/* No favicon request (it would be a 404 on every page). */}
        <link rel="icon" href="data:," />
        <link rel="stylesheet" href="/dashboard/assets/app.css" />
        <script type="module" src="/dashboard/assets/app.js" />
      </head>
      <body>
        <div id="app" data-page={page} data-id={id ?? ""}>
          <noscript>The Wrenn dashboard needs JavaScript. The API is documented at /docs.</noscript>
        </div>
      </body>
    </html>
  );
}

function page(c: Context<AppEnv>, name: string, title: string, id?: string) {
  c.header("content-security-policy", contentSecurityPolicy);
  c.header("x-content-type-options", "nosniff");
  c.header("referrer-policy", "same-origin");
  c.header("cache-control", "no-store");
  return c.html(`<!doctype html>${(<Shell page={name} title={title} {...(id ? { id } : {})} />).toString()}`);
}

/**
 * The web dashboard under /dashboard (docs/dashboard.md). Each URL is a route here that answers the
 * same shell naming its page; the client bundle draws the page from the /v1 API with the session
 * cookie. `GET /` sends browsers (Accept: text/html) to it and answers API clients as before (404).
 * The assets come from the runtime: Node reads edge/dashboard/public (edge/node/dashboard-assets.ts);
 * on Workers the assets binding serves them before the Worker runs, or through `ASSETS` here.
 */
export function dashboardRouter(assets: DocsAssets | undefined): App {
  const app = newRouter();
  app.get("/", (c) =>
    (c.req.header("accept") ?? "").includes("text/html") ? c.redirect("/dashboard", 302) : c.notFound(),
  );
  app.get("/dashboard", (c) => page(c, "sandboxes", "Sandboxes"));
  app.get("/dashboard/sign-in", (c) => page(c, "sign-in", "Sign in"));
  // The invitation link the accounts API hands out (acceptPath); the token is in the fragment.
  app.get("/invitations/accept", (c) => page(c, "accept", "Join a team"));
  app.get("/dashboard/sandboxes/:id", (c) => page(c, "sandbox", "Sandbox", c.req.param("id")));
  app.get("/dashboard/keys", (c) => page(c, "keys", "API keys"));
  app.get("/dashboard/team", (c) => page(c, "team", "Team"));
  app.get("/dashboard/audit", (c) => page(c, "audit", "Audit log"));
  app.get("/dashboard/hosts", (c) => page(c, "hosts", "Hosts"));
  app.get("/dashboard/assets/:name", async (c) => {
    const name = c.req.param("name");
    if (!assetNames.has(name)) return c.notFound();
    const binding = (c.env as { ASSETS?: { fetch(req: Request): Promise<Response> } } | undefined)?.ASSETS;
    const res = binding ? await binding.fetch(c.req.raw) : await assets?.(name);
    return res ?? c.notFound();
  });
  return app;
}
