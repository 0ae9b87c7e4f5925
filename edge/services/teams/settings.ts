import { asc, eq } from "drizzle-orm";
import { type IsolationClassName, type TeamQuotaOverrides, type TeamRow, teams } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { NotFoundError, ServiceError } from "../errors.js";
import { defaultTeamQuotas, effectiveQuotas, type TeamQuotas, type TeamUsage, teamUsage } from "./quotas.js";

/** A team as the API shows it: its isolation minimum, its limits (with overrides marked) and what it holds. */
export interface TeamView {
  id: string;
  name: string;
  /** The weakest isolation class its sandboxes may run on; null: any. */
  minIsolation: IsolationClassName | null;
  /** The limits in force. */
  quotas: TeamQuotas;
  /** The limits an admin set for this team (the rest are the defaults). */
  quotaOverrides: TeamQuotaOverrides;
  usage: TeamUsage;
  createdAt: string;
  updatedAt: string;
}

async function toTeamView(ctx: TeamContext, row: TeamRow): Promise<TeamView> {
  return {
    id: row.id,
    name: row.name,
    minIsolation: row.minIsolation ?? null,
    quotas: effectiveQuotas(row.quotas),
    quotaOverrides: row.quotas,
    usage: await teamUsage(ctx.db, row.id),
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

/** `me` names the caller's own team. */
function resolveTeamId(ctx: TeamContext, teamId: string): string {
  return teamId === "me" ? ctx.principal.teamId : teamId;
}

/** Every team, oldest first (admin). */
export async function listTeams(ctx: TeamContext): Promise<TeamView[]> {
  const rows = await ctx.db.select().from(teams).orderBy(asc(teams.createdAt), asc(teams.id));
  return Promise.all(rows.map((row) => toTeamView(ctx, row)));
}

/** One team: any team for an admin key, only its own for a team key (another team's id is NOT_FOUND). */
export async function getTeam(ctx: TeamContext, teamId: string): Promise<TeamView> {
  const id = resolveTeamId(ctx, teamId);
  if (id !== ctx.principal.teamId && !ctx.principal.isAdmin) throw new NotFoundError("team", teamId);
  const [row] = await ctx.db.select().from(teams).where(eq(teams.id, id)).limit(1);
  if (!row) throw new NotFoundError("team", teamId);
  return toTeamView(ctx, row);
}

/** Input of `updateTeamSettings`: a field left out stays as it is; null resets it to the default. */
export interface TeamSettingsInput {
  minIsolation?: IsolationClassName | null;
  quotas?: { [K in keyof TeamQuotas]?: TeamQuotas[K] | null };
}

/**
 * Changes a team's isolation minimum and limits (admin). Limits lowered below what the team holds
 * stop new admissions only; nothing running is stopped. The row lock orders this against admissions.
 */
export async function updateTeamSettings(
  ctx: TeamContext,
  teamId: string,
  input: TeamSettingsInput,
): Promise<TeamView> {
  if (!ctx.principal.isAdmin) throw new ServiceError("FORBIDDEN", "changing a team's settings needs an admin API key");
  const id = resolveTeamId(ctx, teamId);
  const row = await ctx.db.transaction(async (tx) => {
    const [team] = await tx.select().from(teams).where(eq(teams.id, id)).for("update");
    if (!team) throw new NotFoundError("team", teamId);
    const overrides: Record<string, unknown> = { ...team.quotas };
    for (const [name, value] of Object.entries(input.quotas ?? {})) {
      if (!(name in defaultTeamQuotas) || value === undefined) continue;
      if (value === null) delete overrides[name];
      else overrides[name] = value;
    }
    const [updated] = await tx
      .update(teams)
      .set({
        quotas: overrides as TeamQuotaOverrides,
        ...(input.minIsolation !== undefined ? { minIsolation: input.minIsolation } : {}),
        updatedAt: ctx.now(),
      })
      .where(eq(teams.id, id))
      .returning();
    return updated ?? team;
  });
  ctx.logger.info("team settings changed", { teamId: id, minIsolation: row.minIsolation, quotas: row.quotas });
  return toTeamView(ctx, row);
}
