/** The edge's database schema (DESIGN.md §5). drizzle-kit generates migrations from this module. */
export * from "./api-keys.js";
export * from "./audit.js";
export * from "./commands.js";
export * from "./events.js";
export * from "./hosts.js";
export * from "./invitations.js";
export * from "./leases.js";
export * from "./memberships.js";
export * from "./rate-limit-buckets.js";
export * from "./sandbox-events.js";
export * from "./sandboxes.js";
export * from "./sessions.js";
export * from "./snapshots.js";
export * from "./teams.js";
export * from "./telemetry.js";
export * from "./users.js";
export * from "./webhooks.js";
