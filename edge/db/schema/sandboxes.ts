import { bigint, boolean, index, integer, jsonb, pgTable, text, timestamp } from "drizzle-orm/pg-core";
import { isolationClasses, sandboxStates, stopReasons, timeoutActions } from "../../contracts/enums.js";
import type { SandboxNetwork } from "../../contracts/network.js";
import { hosts } from "./hosts.js";
import { teams } from "./teams.js";
import { lifecycleDates, rowVersion } from "./util.js";

// The enums are the API's vocabulary (edge/contracts); the schema re-exports them for its own users.
export {
  activeSandboxStates,
  type SandboxStateName,
  type StopReasonName,
  sandboxStates,
  stopReasons,
  type TimeoutActionName,
  timeoutActions,
} from "../../contracts/enums.js";

/**
 * Sandboxes: desired and observed state. Ids are 20 characters of [a-z0-9] (as E2B's), chosen by the
 * edge before the agent is called. `envdTokenSealed` is envd's access token, encrypted at rest.
 */
export const sandboxes = pgTable(
  "sandboxes",
  {
    id: text("id").primaryKey(),
    teamId: text("team_id")
      .notNull()
      .references(() => teams.id, { onDelete: "cascade" }),
    hostId: text("host_id").references(() => hosts.id, { onDelete: "set null" }),
    template: text("template").notNull(),
    state: text("state", { enum: sandboxStates }).notNull(),
    vcpus: integer("vcpus").notNull(),
    memoryMb: integer("memory_mb").notNull(),
    /** Seconds of life requested at create (or by the last timeout change); 0 means none. */
    timeoutSec: integer("timeout_sec").notNull(),
    onTimeout: text("on_timeout", { enum: timeoutActions }).notNull().default("kill"),
    /** Whether traffic through the sandbox proxy resumes the sandbox while it is paused (E2B's `autoResume`). */
    autoResume: boolean("auto_resume").notNull().default(false),
    /** Whether a pause at the timeout keeps memory (E2B's `keepMemory`); false pauses with files only. */
    keepMemory: boolean("keep_memory").notNull().default(true),
    /** While paused: only its files were kept (its processes ended), so resume boots it afresh. */
    pausedWithoutMemory: boolean("paused_without_memory").notNull().default(false),
    /** When the timeout action runs; null while paused or without a timeout. */
    endAt: timestamp("end_at", { withTimezone: true, mode: "date" }),
    /** Egress policy (allowOut/denyOut, lib/egress-policy.ts); null when the sandbox has none. */
    network: jsonb("network").$type<SandboxNetwork>(),
    /** The internet switch asked for at create or by the last network update; null = the default (on). */
    internetAccess: boolean("internet_access"),
    metadata: jsonb("metadata").$type<Record<string, string>>().notNull().default({}),
    envdTokenSealed: text("envd_token_sealed").notNull(),
    /**
     * E2B's traffic access token, encrypted at rest: set when the sandbox was created with
     * `allowPublicTraffic: false`, and then required (header `e2b-traffic-access-token`) on its ports.
     */
    trafficTokenSealed: text("traffic_token_sealed"),
    envdVersion: text("envd_version").notNull().default(""),
    /** Runtime of the host it was placed on (`firecracker`, `qemu`, `gvisor`, `namespace`); "" before placement. */
    runtime: text("runtime").notNull().default(""),
    /** Isolation class of the host it was placed on; null before placement. */
    isolation: text("isolation", { enum: isolationClasses }),
    /** Bytes of its pause snapshot on the host's disk (what the agent reported at pause); 0 when not paused to disk. */
    snapshotBytes: bigint("snapshot_bytes", { mode: "number" }).notNull().default(0),
    stopReason: text("stop_reason", { enum: stopReasons }),
    /** Human-readable failure for `error` (and `stopped` with reason `error`). */
    error: text("error"),
    startedAt: timestamp("started_at", { withTimezone: true, mode: "date" }),
    stoppedAt: timestamp("stopped_at", { withTimezone: true, mode: "date" }),
    ...rowVersion,
    ...lifecycleDates,
  },
  (t) => [
    index("sandboxes_team_created_idx").on(t.teamId, t.createdAt, t.id),
    index("sandboxes_host_state_idx").on(t.hostId, t.state),
    index("sandboxes_state_end_idx").on(t.state, t.endAt),
  ],
);

/** A row of `sandboxes`. */
export type SandboxRow = typeof sandboxes.$inferSelect;
