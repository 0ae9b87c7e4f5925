import {
  bigint,
  bigserial,
  doublePrecision,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  smallint,
  text,
  timestamp,
  uniqueIndex,
} from "drizzle-orm/pg-core";
import { hosts } from "./hosts.js";

/**
 * Resource samples of sandboxes over time, pulled from the agents (edge/services/telemetry/). Raw
 * samples (`resolution_sec` 0, one every few seconds) are kept 24 hours; older ones are folded into
 * 1-minute averages (`resolution_sec` 60, `sample_count` samples each) kept 7 days (docs/metrics-and-logs.md).
 */
export const sandboxMetrics = pgTable(
  "sandbox_metrics",
  {
    sandboxId: text("sandbox_id").notNull(),
    /** 0 for a raw sample, 60 for a 1-minute rollup. */
    resolutionSec: smallint("resolution_sec").notNull().default(0),
    /** When the agent took the sample (a rollup: the start of its minute). */
    ts: timestamp("ts", { withTimezone: true, mode: "date", precision: 3 }).notNull(),
    cpuCount: integer("cpu_count").notNull(),
    cpuUsedPct: doublePrecision("cpu_used_pct").notNull(),
    memUsed: bigint("mem_used", { mode: "number" }).notNull(),
    memTotal: bigint("mem_total", { mode: "number" }).notNull(),
    memCache: bigint("mem_cache", { mode: "number" }).notNull(),
    diskUsed: bigint("disk_used", { mode: "number" }).notNull(),
    diskTotal: bigint("disk_total", { mode: "number" }).notNull(),
    /** Raw samples a row stands for (1 for a raw sample); rollups merge by it. */
    sampleCount: integer("sample_count").notNull().default(1),
  },
  (t) => [
    primaryKey({ columns: [t.sandboxId, t.resolutionSec, t.ts] }),
    index("sandbox_metrics_age_idx").on(t.resolutionSec, t.ts),
  ],
);

/**
 * Each sandbox's log (E2B's `/v2/sandboxes/{id}/logs`) as the agents report it: processes envd
 * started and saw end, with exit codes. Lifecycle events come from `sandbox_events` and are merged
 * in when read. Kept 7 days, also after the sandbox ended.
 */
export const sandboxLogs = pgTable(
  "sandbox_logs",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    sandboxId: text("sandbox_id").notNull(),
    ts: timestamp("ts", { withTimezone: true, mode: "date", precision: 3 }).notNull(),
    /** debug, info, warn or error. */
    level: text("level").notNull(),
    message: text("message").notNull(),
    fields: jsonb("fields").$type<Record<string, string>>().notNull().default({}),
    /** The agent's epoch and sequence number: a repeated pull inserts nothing twice. */
    epoch: text("epoch").notNull(),
    seq: bigint("seq", { mode: "number" }).notNull(),
  },
  (t) => [
    index("sandbox_logs_sandbox_ts_idx").on(t.sandboxId, t.ts),
    index("sandbox_logs_ts_idx").on(t.ts),
    uniqueIndex("sandbox_logs_source_idx").on(t.epoch, t.seq),
  ],
);

/** Where the edge's last pull of a host's telemetry ended: the agent's epoch and sequence number. */
export const telemetryCursors = pgTable("telemetry_cursors", {
  hostId: text("host_id")
    .primaryKey()
    .references(() => hosts.id, { onDelete: "cascade" }),
  epoch: text("epoch").notNull(),
  afterSeq: bigint("after_seq", { mode: "number" }).notNull(),
  updatedAt: timestamp("updated_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
});

export type SandboxMetricRow = typeof sandboxMetrics.$inferSelect;
export type SandboxLogRow = typeof sandboxLogs.$inferSelect;
