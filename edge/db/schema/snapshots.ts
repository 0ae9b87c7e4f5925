import { sql } from "drizzle-orm";
import { bigint, boolean, index, integer, pgTable, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";
import { snapshotStates } from "../../contracts/snapshots.js";
import { hosts } from "./hosts.js";
import { teams } from "./teams.js";
import { lifecycleDates, rowVersion } from "./util.js";

// The states are the API's vocabulary (edge/contracts); the schema re-exports them for its own users.
export { type SnapshotStateName, snapshotStates } from "../../contracts/snapshots.js";

/**
 * Snapshots of a team's sandboxes (E2B's `createSnapshot`/`fork`): a sandbox's files (and, where the
 * runtime keeps memory, its memory and processes) held by the one host that took it. New sandboxes
 * from it start on that host. Ids are 20 characters of [a-z0-9], like E2B's template ids, so the SDK's
 * `Sandbox.create(snapshotId)` sends one as `templateID`. Rows are never deleted by the API, only marked,
 * so a deleted id answers 404 rather than being taken for a template name.
 */
export const snapshots = pgTable(
  "snapshots",
  {
    id: text("id").primaryKey(),
    teamId: text("team_id")
      .notNull()
      .references(() => teams.id, { onDelete: "cascade" }),
    /** The sandbox it was taken from (no foreign key: the snapshot outlives the sandbox's row). */
    sourceSandboxId: text("source_sandbox_id").notNull(),
    /** The host that holds it; null once that host was deleted (the snapshot is then lost). */
    hostId: text("host_id").references(() => hosts.id, { onDelete: "set null" }),
    template: text("template").notNull(),
    /** The runtime that took it; only that runtime starts sandboxes from it. */
    runtime: text("runtime").notNull().default(""),
    /** Whether it kept memory: sandboxes from it resume the source's processes. False: files only. */
    keepsMemory: boolean("keeps_memory").notNull().default(false),
    vcpus: integer("vcpus").notNull(),
    memoryMb: integer("memory_mb").notNull(),
    sizeBytes: bigint("size_bytes", { mode: "number" }).notNull().default(0),
    /** E2B's optional snapshot name; unique among the team's live snapshots. */
    name: text("name"),
    state: text("state", { enum: snapshotStates }).notNull(),
    /** Human-readable failure, for `error` and `lost`. */
    error: text("error"),
    deletedAt: timestamp("deleted_at", { withTimezone: true, mode: "date" }),
    ...rowVersion,
    ...lifecycleDates,
  },
  (t) => [
    index("snapshots_team_created_idx").on(t.teamId, t.createdAt, t.id),
    index("snapshots_host_state_idx").on(t.hostId, t.state),
    uniqueIndex("snapshots_team_name_idx")
      .on(t.teamId, t.name)
      .where(sql`${t.name} is not null and ${t.state} in ('creating', 'ready')`),
  ],
);

/** A row of `snapshots`. */
export type SnapshotRow = typeof snapshots.$inferSelect;
