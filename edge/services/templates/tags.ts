import { and, desc, eq } from "drizzle-orm";
import { type TemplateBuildRow, templateBuilds } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { NotFoundError } from "../errors.js";
import { listBuilds, loadOwnTemplate, loadVisibleTemplate, parseTemplateName } from "./load.js";

/** A template's tags, each on the build it names (E2B's `TemplateTag`). */
export async function templateTags(
  ctx: TeamContext,
  idOrAlias: string,
): Promise<Array<{ tag: string; buildId: string; createdAt: Date }>> {
  const template = await loadVisibleTemplate(ctx, idOrAlias);
  const builds = template.teamId === ctx.principal.teamId ? await listBuilds(ctx, template.id, 1000) : [];
  return builds.flatMap((b) => b.tags.map((tag) => ({ tag, buildId: b.id, createdAt: b.createdAt })));
}

/** The build `alias:tag` names (the current version for a bare alias); NOT_FOUND otherwise. */
async function targetBuild(ctx: TeamContext, target: string): Promise<TemplateBuildRow> {
  const { alias, tags } = parseTemplateName(target);
  const template = await loadOwnTemplate(ctx, alias);
  const tag = tags[0];
  if (tag === undefined) {
    if (!template.currentBuildId) throw new NotFoundError("build of template", alias);
    const [row] = await ctx.db
      .select()
      .from(templateBuilds)
      .where(eq(templateBuilds.id, template.currentBuildId))
      .limit(1);
    if (!row) throw new NotFoundError("build of template", alias);
    return row;
  }
  const builds = await ctx.db
    .select()
    .from(templateBuilds)
    .where(eq(templateBuilds.templateId, template.id))
    .orderBy(desc(templateBuilds.createdAt))
    .limit(1000);
  const row = builds.find((b) => b.tags.includes(tag));
  if (!row) throw new NotFoundError("tag", target);
  return row;
}

/**
 * E2B's `assignTags`: puts `tags` on the build `target` (`alias:tag`, or the current version of
 * `alias`), taking them off any other build of the template, since a tag names one build.
 */
export async function assignTags(
  ctx: TeamContext,
  target: string,
  tags: string[],
): Promise<{ buildId: string; tags: string[] }> {
  const build = await targetBuild(ctx, target);
  const { tags: wanted } = parseTemplateName("x", tags);
  return ctx.db.transaction(async (tx) => {
    const builds = await tx.select().from(templateBuilds).where(eq(templateBuilds.templateId, build.templateId));
    for (const b of builds) {
      const next = b.id === build.id ? [...new Set([...b.tags, ...wanted])] : b.tags.filter((t) => !wanted.includes(t));
      if (next.length !== b.tags.length || b.id === build.id) {
        await tx.update(templateBuilds).set({ tags: next }).where(eq(templateBuilds.id, b.id));
      }
    }
    return { buildId: build.id, tags: wanted };
  });
}

/** E2B's `removeTags`: takes `tags` off every build of the team's template `name`. */
export async function removeTags(ctx: TeamContext, name: string, tags: string[]): Promise<void> {
  const template = await loadOwnTemplate(ctx, parseTemplateName(name).alias);
  const builds = await ctx.db
    .select()
    .from(templateBuilds)
    .where(and(eq(templateBuilds.templateId, template.id)));
  for (const b of builds) {
    if (!b.tags.some((t) => tags.includes(t))) continue;
    await ctx.db
      .update(templateBuilds)
      .set({ tags: b.tags.filter((t) => !tags.includes(t)) })
      .where(eq(templateBuilds.id, b.id));
  }
}
