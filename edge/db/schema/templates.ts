import { sql } from "drizzle-orm";
import {
  boolean,
  customType,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
} from "drizzle-orm/pg-core";
import { hosts } from "./hosts.js";
import { teams } from "./teams.js";
import { lifecycleDates } from "./util.js";

/**
 * `bytea` as a Uint8Array. node-postgres and PGlite hand back bytes; a driver that answers in
 * Postgres' text form (`\x` and hex) is decoded here, so every driver yields the same value.
 */
const bytea = customType<{ data: Uint8Array; driverData: Uint8Array | string }>({
  dataType: () => "bytea",
  toDriver: (value) => value,
  fromDriver: (value) => {
    if (typeof value !== "string") return new Uint8Array(value);
    const hex = value.startsWith("\\x") ? value.slice(2) : value;
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
    return out;
  },
});

/** A build's states, E2B's words: requested but not started (`waiting`), `building`, `ready`, `error`. */
export const templateBuildStates = ["waiting", "building", "ready", "error"] as const;
export type TemplateBuildStateName = (typeof templateBuildStates)[number];

/** One line of a build's log, as the agent reported it. */
export interface TemplateBuildLogLine {
  timestamp: string;
  level: "debug" | "info" | "warn" | "error";
  message: string;
}

/**
 * Templates users build (E2B's `Template.build`, /v1/templates). The id is also the template's name
 * on the agents (`[a-z0-9-]`, never the 20-character form of a snapshot id), so a sandbox of it names
 * it as any built-in template. The alias is unique within the team; a team sees its own templates
 * and the public ones.
 */
export const templates = pgTable(
  "templates",
  {
    id: text("id").primaryKey(),
    teamId: text("team_id")
      .notNull()
      .references(() => teams.id, { onDelete: "cascade" }),
    alias: text("alias").notNull(),
    public: boolean("public").notNull().default(false),
    vcpus: integer("vcpus").notNull(),
    memoryMb: integer("memory_mb").notNull(),
    /** The last build that succeeded: the version sandboxes start from. Null until one did. */
    currentBuildId: text("current_build_id"),
    /** The host that holds the current version; null before the first success or once that host was deleted. */
    hostId: text("host_id").references(() => hosts.id, { onDelete: "set null" }),
    buildCount: integer("build_count").notNull().default(0),
    ...lifecycleDates,
  },
  (t) => [
    uniqueIndex("templates_team_alias_idx").on(t.teamId, t.alias),
    index("templates_public_alias_idx").on(t.alias).where(sql`${t.public}`),
  ],
);

/**
 * Builds of a template. The edge keeps the agent's answers here (status, logs, reason), polled on
 * each status request, so a build's record outlives the agent's memory of it and no edge task has to
 * watch it.
 */
export const templateBuilds = pgTable(
  "template_builds",
  {
    id: text("id").primaryKey(),
    templateId: text("template_id")
      .notNull()
      .references(() => templates.id, { onDelete: "cascade" }),
    teamId: text("team_id")
      .notNull()
      .references(() => teams.id, { onDelete: "cascade" }),
    status: text("status", { enum: templateBuildStates }).notNull(),
    /** The host that runs (ran) it; chosen when the build is started. */
    hostId: text("host_id").references(() => hosts.id, { onDelete: "set null" }),
    tags: jsonb("tags").$type<string[]>().notNull().default([]),
    vcpus: integer("vcpus").notNull(),
    memoryMb: integer("memory_mb").notNull(),
    /** What was built (the steps, base, start command), in Wrenn's form; null while `waiting`. */
    spec: jsonb("spec").$type<Record<string, unknown>>(),
    logs: jsonb("logs").$type<TemplateBuildLogLine[]>().notNull().default([]),
    cachedSteps: jsonb("cached_steps").$type<number[]>().notNull().default([]),
    errorMessage: text("error_message"),
    /** Index of the failing step; -1 when the failure was not a step's (the base, the host). */
    errorStep: integer("error_step"),
    startedAt: timestamp("started_at", { withTimezone: true, mode: "date" }),
    finishedAt: timestamp("finished_at", { withTimezone: true, mode: "date" }),
    ...lifecycleDates,
  },
  (t) => [
    index("template_builds_template_created_idx").on(t.templateId, t.createdAt),
    index("template_builds_status_idx").on(t.status),
  ],
);

/**
 * Archives uploaded for COPY steps (tar, maybe gzipped), by the sha256 the SDK computed over the
 * files. Kept per team: one team's upload never answers another's `present`.
 */
export const templateBuildFiles = pgTable(
  "template_build_files",
  {
    teamId: text("team_id")
      .notNull()
      .references(() => teams.id, { onDelete: "cascade" }),
    hash: text("hash").notNull(),
    content: bytea("content").notNull(),
    sizeBytes: integer("size_bytes").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.teamId, t.hash] })],
);

/** A row of `templates`. */
export type TemplateRow = typeof templates.$inferSelect;
/** A row of `template_builds`. */
export type TemplateBuildRow = typeof templateBuilds.$inferSelect;
