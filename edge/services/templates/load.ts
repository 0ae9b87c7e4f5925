import { and, asc, desc, eq, or } from "drizzle-orm";
import { type TemplateBuildRow, type TemplateRow, templateBuilds, templates } from "../../db/schema/index.js";

export type { TemplateBuildRow, TemplateRow };

import type { TeamContext } from "../context.js";
import { BadRequestError, NotFoundError } from "../errors.js";
import { randomString } from "../ids.js";

/**
 * Template ids: `tpl-` and 16 characters of [a-z0-9]. The id is also the template's name on the
 * agents; the dash keeps it out of the 20-character [a-z0-9] form of snapshot ids, which the E2B
 * create path takes for a snapshot.
 */
export const templateIdPattern = /^tpl-[a-z0-9]{16}$/;

/** A new template id. */
export function newTemplateId(): string {
  return `tpl-${randomString(16, "abcdefghijklmnopqrstuvwxyz0123456789")}`;
}

/** Build ids: a UUID, as E2B's (its SDK shows them; the agent takes up to 64 of [A-Za-z0-9_-]). */
export function newBuildId(): string {
  return crypto.randomUUID();
}

/** Aliases: what E2B accepts for a template name. */
export const templateAliasPattern = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const tagPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/**
 * E2B's template name, `alias` or `alias:tag` (an optional `namespace/` in front is the team's own
 * and dropped), as alias and tags. Invalid names are a 400 naming the field.
 */
export function parseTemplateName(name: string, tags: string[] = []): { alias: string; tags: string[] } {
  const bare = name.trim().split("/").at(-1) ?? "";
  const [alias = "", tag, ...rest] = bare.split(":");
  if (!templateAliasPattern.test(alias) || rest.length > 0) {
    throw new BadRequestError(
      `invalid template name ${JSON.stringify(name)}: lower-case letters, digits, '.', '_' and '-', optionally ':tag'`,
      { name: "invalid" },
    );
  }
  const all = [...(tag !== undefined ? [tag] : []), ...tags];
  for (const t of all) {
    if (!tagPattern.test(t)) throw new BadRequestError(`invalid tag ${JSON.stringify(t)}`, { tags: "invalid" });
  }
  return { alias, tags: [...new Set(all)] };
}

/**
 * A template the team may see, by id or alias: the team's own first, then a public one. Another
 * team's private template answers NOT_FOUND exactly as a missing one.
 */
export async function findVisibleTemplate(ctx: TeamContext, idOrAlias: string): Promise<TemplateRow | null> {
  const teamId = ctx.principal.teamId;
  const bare = (idOrAlias.split("/").at(-1) ?? idOrAlias).split(":")[0] ?? idOrAlias;
  const byId = templateIdPattern.test(bare);
  if (!byId && !templateAliasPattern.test(bare)) return null;
  const rows = await ctx.db
    .select()
    .from(templates)
    .where(
      and(
        byId ? eq(templates.id, bare) : eq(templates.alias, bare),
        or(eq(templates.teamId, teamId), eq(templates.public, true)),
      ),
    )
    .orderBy(asc(templates.createdAt))
    .limit(20);
  return rows.find((r) => r.teamId === teamId) ?? rows[0] ?? null;
}

/** `findVisibleTemplate`, or NOT_FOUND. */
export async function loadVisibleTemplate(ctx: TeamContext, idOrAlias: string): Promise<TemplateRow> {
  const row = await findVisibleTemplate(ctx, idOrAlias);
  if (!row) throw new NotFoundError("template", idOrAlias);
  return row;
}

/** A template of the caller's team (to build, change or delete), by id or alias; anything else NOT_FOUND. */
export async function loadOwnTemplate(ctx: TeamContext, idOrAlias: string): Promise<TemplateRow> {
  const row = await findVisibleTemplate(ctx, idOrAlias);
  if (!row || row.teamId !== ctx.principal.teamId) throw new NotFoundError("template", idOrAlias);
  return row;
}

/** A build of one of the team's templates; anything else NOT_FOUND. */
export async function loadOwnBuild(ctx: TeamContext, templateId: string, buildId: string): Promise<TemplateBuildRow> {
  const template = await loadOwnTemplate(ctx, templateId);
  const [row] = await ctx.db
    .select()
    .from(templateBuilds)
    .where(and(eq(templateBuilds.id, buildId), eq(templateBuilds.templateId, template.id)))
    .limit(1);
  if (!row) throw new NotFoundError("build", buildId);
  return row;
}

/** A template's builds, newest first. */
export async function listBuilds(ctx: TeamContext, templateId: string, limit = 50): Promise<TemplateBuildRow[]> {
  return ctx.db
    .select()
    .from(templateBuilds)
    .where(eq(templateBuilds.templateId, templateId))
    .orderBy(desc(templateBuilds.createdAt))
    .limit(limit);
}
