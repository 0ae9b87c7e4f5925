import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { DocsAssets } from "../context.js";

const contentTypes: Record<string, string> = {
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
};

/**
 * Serves the dashboard's bundle (edge/dashboard/public/dashboard/assets, built by
 * `npm run build:dashboard` and committed) from memory after the first read. The files are
 * revalidated rather than cached for long: their names carry no hash.
 */
export function nodeDashboardAssets(
  root = fileURLToPath(new URL("../dashboard/public/dashboard/assets/", import.meta.url)),
): DocsAssets {
  const cache = new Map<string, Uint8Array<ArrayBuffer>>();
  return async (name) => {
    const type = contentTypes[name.slice(name.lastIndexOf("."))];
    if (!type || name.includes("/") || name.includes("..")) return undefined;
    let bytes = cache.get(name);
    if (!bytes) {
      try {
        bytes = new Uint8Array(await readFile(join(root, name)));
      } catch {
        return undefined;
      }
      cache.set(name, bytes);
    }
    return new Response(bytes, { headers: { "content-type": type, "cache-control": "no-cache" } });
  };
}
