import { createRequire } from "node:module";
import { dirname } from "node:path";
import type { DocsAssets } from "../context.js";
import { staticFiles } from "./static-files.js";

/** Serves Swagger UI's files from the installed `swagger-ui-dist` package. */
export function nodeDocsAssets(): DocsAssets {
  return staticFiles(
    dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json")),
    { ".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".png": "image/png" },
    "public, max-age=86400",
  );
}
