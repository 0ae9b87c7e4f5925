import { stringify } from "yaml";
import type { App, DocsAssets } from "../../context.js";
import { withScopeNotes } from "../../middleware/auth.js";
import { newRouter } from "../router.js";

/** The OpenAPI document's header. */
export const openApiInfo = {
  openapi: "3.1.0",
  info: {
    title: "Wrenn API",
    version: "1.0.0",
    description:
      "Self-hostable sandboxes. Authenticate with `X-API-Key: <key>` or `Authorization: Bearer <key>`. " +
      "Errors have one shape: `{ error: { code, message, requestId } }`.",
  },
} as const;

const swaggerFiles = new Set([
  "swagger-ui.css",
  "swagger-ui-bundle.js",
  "swagger-ui-standalone-preset.js",
  "favicon-32x32.png",
]);

// persistAuthorization stays off: the page shares the API's origin, and a key kept in localStorage
// would outlive the tab and be readable by any script that ever runs on that origin.
const docsPage = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Wrenn API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, persistAuthorization: false });
</script>
</body>
</html>`;

/**
 * /openapi.json, /openapi.yaml and /docs. The Swagger UI page loads its assets from /docs/assets,
 * served by the runtime's `DocsAssets` (never a CDN), so it works offline.
 */
export function docsRouter(root: App, assets: DocsAssets | undefined): App {
  const app = newRouter();
  const document = () => withScopeNotes(root.getOpenAPI31Document(openApiInfo));
  app.get("/openapi.json", (c) => c.json(document()));
  app.get("/openapi.yaml", (c) =>
    c.body(stringify(document()), 200, { "content-type": "application/yaml; charset=utf-8" }),
  );
  app.get("/docs", (c) => c.html(docsPage));
  app.get("/docs/assets/:name", async (c) => {
    const name = c.req.param("name");
    const res = assets && swaggerFiles.has(name) ? await assets(name) : undefined;
    return res ?? c.notFound();
  });
  return app;
}
