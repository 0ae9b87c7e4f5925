import { boolean, integer, jsonb, pgTable, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";
import { hostStatuses, isolationClasses } from "../../contracts/enums.js";
import { lifecycleDates, rowVersion } from "./util.js";

// The enums are the API's vocabulary (edge/contracts); the schema re-exports them for its own users.
export {
  type HostStatus,
  hostStatuses,
  type IsolationClassName,
  isolationClasses,
} from "../../contracts/enums.js";

/**
 * Machines running a host agent. `tokenSealed` is the agent's bearer token, encrypted with the
 * edge's secret key (AES-GCM). Capacity columns are what GetHostInfo last reported. Ids look like `host_…`.
 */
export const hosts = pgTable(
  "hosts",
  {
    id: text("id").primaryKey(),
    /** Base URL of the agent, e.g. `http://10.0.0.5:9000`. */
    address: text("address").notNull(),
    tokenSealed: text("token_sealed").notNull(),
    /**
     * SHA-256 fingerprint of the agent's TLS certificate (64 lowercase hex digits): when set, the edge
     * talks to the agent only if it presents exactly that certificate. Node edges only (Workers cannot pin).
     */
    tlsPin: text("tls_pin"),
    /** PEM of the CA the agent's certificate must chain to (with its host name checked); Node edges only. */
    caPem: text("ca_pem"),
    status: text("status", { enum: hostStatuses }).notNull().default("active"),
    runtime: text("runtime").notNull().default(""),
    /**
     * Isolation class the host last reported (or derived from its runtime for agents that predate
     * the field). Defaults to the weakest class, so a host is never trusted more than it said.
     */
    isolation: text("isolation", { enum: isolationClasses }).notNull().default("namespace"),
    capacityVcpus: integer("capacity_vcpus").notNull().default(0),
    capacityMemoryMb: integer("capacity_memory_mb").notNull().default(0),
    capacityMaxSandboxes: integer("capacity_max_sandboxes").notNull().default(0),
    /** When false, a paused sandbox keeps its memory on the host (frozen in place) and counts against capacity. */
    pauseToDisk: boolean("pause_to_disk").notNull().default(false),
    /** Whether its snapshots keep memory (sandboxes from them resume processes: VM runtimes) or files only. */
    snapshotsKeepMemory: boolean("snapshots_keep_memory").notNull().default(false),
    templates: jsonb("templates").$type<string[]>().notNull().default([]),
    agentVersion: text("agent_version").notNull().default(""),
    envdVersion: text("envd_version").notNull().default(""),
    /** Reconcile sweeps in a row that could not reach the host; reset when it answers. */
    consecutiveFailures: integer("consecutive_failures").notNull().default(0),
    lastSeenAt: timestamp("last_seen_at", { withTimezone: true, mode: "date" }),
    lastError: text("last_error"),
    ...rowVersion,
    ...lifecycleDates,
  },
  (t) => [uniqueIndex("hosts_address_idx").on(t.address)],
);

/** A row of `hosts`. */
export type HostRow = typeof hosts.$inferSelect;
