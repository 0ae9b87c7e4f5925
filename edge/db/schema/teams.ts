import { jsonb, pgTable, text } from "drizzle-orm/pg-core";
import { type IsolationClassName, isolationClasses } from "../../contracts/enums.js";
import { lifecycleDates } from "./util.js";

/**
 * Per-team limits an admin may set; an absent field means the deployment's default
 * (edge/services/teams/quotas.ts). Stored as one JSON object so a new limit needs no migration.
 */
export interface TeamQuotaOverrides {
  maxRunningSandboxes?: number;
  maxVcpus?: number;
  maxMemoryMb?: number;
  maxPausedSandboxes?: number;
  maxPausedDiskMb?: number;
  maxTimeoutSec?: number;
  allowNoTimeout?: boolean;
  maxApiKeys?: number;
}

/** A team owns sandboxes and API keys; every sandbox query is scoped by team. Ids look like `team_…`. */
export const teams = pgTable("teams", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  /** The weakest isolation class the team's sandboxes may run on; null: any. */
  minIsolation: text("min_isolation", { enum: isolationClasses }).$type<IsolationClassName>(),
  /** Limits that differ from the defaults. */
  quotas: jsonb("quotas").$type<TeamQuotaOverrides>().notNull().default({}),
  ...lifecycleDates,
});

/** A row of `teams`. */
export type TeamRow = typeof teams.$inferSelect;
