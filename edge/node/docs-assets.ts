import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { DocsAssets } from "../context.js";

const contentTypes: Record<string, string> = {
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".png": "image/png",
};

/** Serves Swagger UI's files from the installed `swagger-ui-dist` package, cached in memory after first use. */
export function nodeDocsAssets(): DocsAssets {
  const root = dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));
  const cache = new Map<string, Uint8Array<ArrayBuffer>>();
  return async (name) => {
    const ext = name.slice(name.lastIndexOf("."));
    const type = contentTypes[ext];
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
    return new Response(bytes, { headers: { "content-type": type, "cache-control": "public, max-age=86400" } });
  };
}
