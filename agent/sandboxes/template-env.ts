import { readFile } from "node:fs/promises";

/** Most variables taken from a template's manifest, and the longest value (an imported image sets them). */
const MAX_VARS = 256;
const MAX_VALUE_CHARS = 32 * 1024;
const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

/**
 * The default environment a template's image declares (manifest.json `env`: a recipe's, or an imported
 * container image's `Env`), for envd's /init, under the sandbox's own variables. The manifest is written
 * by the image builder on this host, but an imported image chose the values: names must be shell names,
 * and counts and sizes are bounded; anything else is left out. A missing or unreadable manifest gives none
 * (the create checked it exists).
 */
export async function readTemplateEnv(manifestPath: string): Promise<Record<string, string>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(manifestPath, "utf8"));
  } catch {
    return {};
  }
  const env = (parsed as { env?: unknown } | null)?.env;
  if (env === null || typeof env !== "object" || Array.isArray(env)) return {};
  const out: Record<string, string> = {};
  let count = 0;
  for (const [name, value] of Object.entries(env as Record<string, unknown>)) {
    if (count >= MAX_VARS) break;
    if (!NAME.test(name) || typeof value !== "string" || value.length > MAX_VALUE_CHARS) continue;
    out[name] = value;
    count++;
  }
  return out;
}
