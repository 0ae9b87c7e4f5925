import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { DocsAssets } from "../context.js";

/**
 * Serves the flat files of one directory by name (no sub-paths, only the listed types), from memory
 * after the first read: Swagger UI's files and the dashboard's bundle are both a handful of small,
 * fixed files.
 */
export function staticFiles(root: string, contentTypes: Record<string, string>, cacheControl: string): DocsAssets {
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
    return new Response(bytes, { headers: { "content-type": type, "cache-control": cacheControl } });
  };
}
