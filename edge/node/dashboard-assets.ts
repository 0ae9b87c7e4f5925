import { fileURLToPath } from "node:url";
import type { DocsAssets } from "../context.js";
import { staticFiles } from "./static-files.js";

/**
 * Serves the dashboard's bundle (edge/dashboard/public/dashboard/assets, built by
 * `npm run build:dashboard` and committed). The files are revalidated rather than cached for long:
 * their names carry no hash.
 */
export function nodeDashboardAssets(
  root = fileURLToPath(new URL("../dashboard/public/dashboard/assets/", import.meta.url)),
): DocsAssets {
  return staticFiles(root, { ".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8" }, "no-cache");
}
