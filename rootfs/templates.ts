import { readdir, readFile } from "node:fs/promises";
import { join, posix } from "node:path";
import { z } from "zod";
import { BuildError } from "./errors.js";

/** Directory holding the shipped templates (rootfs/templates/<name>/template.json). */
export const TEMPLATES_DIR = join(import.meta.dirname, "templates");

export const templateName = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, "lower-case letters, digits and dashes");
const debianPackage = z.string().regex(/^[a-z0-9][a-z0-9+.-]+$/, "a Debian package name");

/** One file a template adds to the image: inline content, or a file next to template.json. */
export const templateFileSchema = z
  .object({
    /** Absolute path inside the image. */
    path: z
      .string()
      .refine(
        (p) => posix.isAbsolute(p) && posix.normalize(p) === p && !p.endsWith("/"),
        "an absolute, normalised file path",
      ),
    content: z.string().optional(),
    /** Path relative to the template's directory. */
    source: z
      .string()
      .refine(
        (p) => !posix.isAbsolute(p) && !posix.normalize(p).startsWith(".."),
        "a path inside the template directory",
      )
      .optional(),
    /** Octal permission bits. */
    mode: z
      .string()
      .regex(/^0?[0-7]{3,4}$/, "octal permissions such as 0644")
      .default("0644"),
    /** owner:group, names or ids as they exist in the image. */
    owner: z
      .string()
      .regex(/^[a-z0-9_-]+:[a-z0-9_-]+$/)
      .default("root:root"),
  })
  .refine((f) => (f.content === undefined) !== (f.source === undefined), "exactly one of content or source");

/**
 * A template: a small declarative recipe layered on its base (or, for the root template, on a
 * debootstrap of Debian bookworm).
 */
export const templateSchema = z.object({
  name: templateName,
  description: z.string().default(""),
  /** Template this one is layered on; null for the root (debootstrap) template. */
  base: templateName.nullable(),
  /** Debian packages installed from the Debian mirror (for the root template: debootstrap --include). */
  aptPackages: z.array(debianPackage).default([]),
  files: z.array(templateFileSchema).default([]),
  /** Environment variables every process in the sandbox starts with (via wrenn-init → envd). */
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "an environment variable name"), z.string()).default({}),
  /** Shell commands run as root in the image after packages and files, without network access. */
  run: z.array(z.string().min(1)).default([]),
  /** Command the agent starts in the sandbox after envd is ready (recorded in the manifest). */
  startCommand: z.string().min(1).nullable().default(null),
});

/** A parsed template.json. */
export type TemplateSpec = z.infer<typeof templateSchema>;

/** A template with where it came from. */
export interface LoadedTemplate {
  spec: TemplateSpec;
  dir: string;
  /** The raw template.json text plus any `source` files, for the cache key. */
  inputs: string[];
}

/** Loads and validates one template; errors name the file and the bad field. */
export async function loadTemplate(name: string, templatesDir = TEMPLATES_DIR): Promise<LoadedTemplate> {
  if (!templateName.safeParse(name).success) throw new BuildError(`"${name}" is not a valid template name`);
  const dir = join(templatesDir, name);
  const file = join(dir, "template.json");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    const known = await listTemplates(templatesDir);
    throw new BuildError(
      `no template named "${name}" (${file} not found)`,
      `known templates: ${known.join(", ") || "none"}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new BuildError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = templateSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new BuildError(`${file} is not a valid template: ${issues}`);
  }
  if (parsed.data.name !== name) throw new BuildError(`${file} names itself "${parsed.data.name}", expected "${name}"`);
  const inputs = [text];
  for (const f of parsed.data.files) {
    if (f.source !== undefined) {
      try {
        inputs.push(await readFile(join(dir, f.source), "utf8"));
      } catch {
        throw new BuildError(`${file}: source file ${f.source} not found in ${dir}`);
      }
    }
  }
  return { spec: parsed.data, dir, inputs };
}

/**
 * Resolves a template and its bases, root first. Fails on a cycle or a missing base.
 */
export async function templateChain(name: string, templatesDir = TEMPLATES_DIR): Promise<LoadedTemplate[]> {
  const chain: LoadedTemplate[] = [];
  let next: string | null = name;
  while (next !== null) {
    if (chain.some((t) => t.spec.name === next)) {
      throw new BuildError(`template base cycle: ${[...chain.map((t) => t.spec.name), next].join(" → ")}`);
    }
    const loaded = await loadTemplate(next, templatesDir);
    chain.push(loaded);
    next = loaded.spec.base;
  }
  return chain.reverse();
}

/** Names of the templates shipped in `templatesDir`. */
export async function listTemplates(templatesDir = TEMPLATES_DIR): Promise<string[]> {
  try {
    const entries = await readdir(templatesDir, { withFileTypes: true });
    return entries
      .filter((e) => e.isDirectory())
      .map((e) => e.name)
      .sort();
  } catch {
    return [];
  }
}
