import { and, eq } from "drizzle-orm";
import { templateBuilds } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { BadRequestError, NotFoundError } from "../errors.js";
import { buildStatus } from "./builds.js";
import { findVisibleTemplate, templateIdPattern } from "./load.js";

/**
 * The agent template a sandbox create names: a template the team sees (by alias or id) becomes its
 * id, the name the agents hold it under; any other name passes through (a built-in template). A
 * template id the team may not see is NOT_FOUND. A template of the team with no successful build yet
 * first has its running builds polled (after `buildInBackground` nobody else may have asked), and is
 * refused when none has finished.
 */
export async function resolveTemplateForSandbox(ctx: TeamContext, name: string): Promise<string> {
  let row = await findVisibleTemplate(ctx, name);
  if (!row) {
    if (templateIdPattern.test(name)) throw new NotFoundError("template", name);
    return name;
  }
  if (row.currentBuildId === null && row.teamId === ctx.principal.teamId) {
    const running = await ctx.db
      .select({ id: templateBuilds.id })
      .from(templateBuilds)
      .where(and(eq(templateBuilds.templateId, row.id), eq(templateBuilds.status, "building")))
      .limit(5);
    for (const b of running) await buildStatus(ctx, row.id, b.id);
    if (running.length > 0) row = (await findVisibleTemplate(ctx, row.id)) ?? row;
  }
  if (row.currentBuildId === null) {
    throw new BadRequestError(`template ${row.alias} (${row.id}) has no successful build yet`, {
      template: "not built",
    });
  }
  return row.id;
}
