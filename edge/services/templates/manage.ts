import { Code } from "@connectrpc/connect";
import { asc, eq, or, sql } from "drizzle-orm";
import { agentErrorToServiceError, connectCodeOf } from "../../clients/agent.js";
import { hosts, type TemplateRow, templateBuilds, templates } from "../../db/schema/index.js";
import { recordAudit } from "../audit/record.js";
import type { TeamContext } from "../context.js";
import { ServiceError } from "../errors.js";
import { agentFor } from "../hosts/target.js";
import { loadOwnTemplate } from "./load.js";

/** The templates a team sees: its own and the public ones, oldest first. */
export async function listTemplates(ctx: TeamContext): Promise<TemplateRow[]> {
  return ctx.db
    .select()
    .from(templates)
    .where(or(eq(templates.teamId, ctx.principal.teamId), eq(templates.public, true)))
    .orderBy(asc(templates.createdAt), asc(templates.id))
    .limit(1000);
}

/**
 * Deletes one of the team's templates: first from every host that built a version of it (so no host
 * keeps a template the database no longer knows; a host that does not know it is fine), then its
 * rows (builds with it). A host that cannot be reached fails the delete, which can be repeated.
 */
export async function deleteTemplate(ctx: TeamContext, idOrAlias: string): Promise<void> {
  const template = await loadOwnTemplate(ctx, idOrAlias);
  const builtOn = await ctx.db
    .selectDistinct({ hostId: templateBuilds.hostId })
    .from(templateBuilds)
    .where(eq(templateBuilds.templateId, template.id));
  const hostIds = new Set(builtOn.flatMap((b) => (b.hostId ? [b.hostId] : [])));
  if (template.hostId) hostIds.add(template.hostId);
  for (const hostId of hostIds) {
    const [host] = await ctx.db.select().from(hosts).where(eq(hosts.id, hostId)).limit(1);
    if (!host) continue;
    try {
      await (await agentFor(ctx, host)).deleteTemplate({ template: template.id });
    } catch (err) {
      if (connectCodeOf(err) !== Code.NotFound)
        throw agentErrorToServiceError(err, `deleting the template on host ${host.id}`);
    }
    await ctx.db
      .update(hosts)
      .set({ templates: sql`${hosts.templates} - ${template.id}` })
      .where(eq(hosts.id, host.id));
  }
  await ctx.db.delete(templates).where(eq(templates.id, template.id));
  await recordAudit(ctx, {
    action: "template.delete",
    objectType: "template",
    objectId: template.id,
    details: { alias: template.alias },
  });
}

/** Makes a template public or private again; only an admin publishes (a public template is every team's). */
export async function setTemplatePublic(ctx: TeamContext, idOrAlias: string, isPublic: boolean): Promise<TemplateRow> {
  const template = await loadOwnTemplate(ctx, idOrAlias);
  if (isPublic && !ctx.principal.isAdmin) {
    throw new ServiceError("FORBIDDEN", "only an admin publishes templates");
  }
  const [row] = await ctx.db
    .update(templates)
    .set({ public: isPublic, updatedAt: ctx.now() })
    .where(eq(templates.id, template.id))
    .returning();
  await recordAudit(ctx, {
    action: "template.update",
    objectType: "template",
    objectId: template.id,
    details: { public: isPublic },
  });
  return row ?? template;
}
