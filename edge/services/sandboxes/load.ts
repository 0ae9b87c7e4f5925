import { and, eq, sql } from "drizzle-orm";
import type { AgentClient, HostTarget } from "../../clients/agent.js";
import type { Database } from "../../db/client.js";
import { preparedQuery } from "../../db/prepared.js";
import { type HostRow, hosts, type SandboxRow, sandboxes } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { ConflictError, NotFoundError, ServiceError } from "../errors.js";
import { hostTarget } from "../hosts/target.js";
import { sandboxIdPattern } from "../ids.js";
import { isPastEnd, repairExpired } from "./expiry.js";

/**
 * Loads a sandbox of the caller's team. Another team's sandbox answers NOT_FOUND exactly as a
 * missing one does, so ids of other teams cannot be probed. A row still `running` past its end time
 * is first brought in line with its host (see expiry.ts), so callers see what the timeout did.
 */
export async function loadSandbox(ctx: TeamContext, sandboxId: string): Promise<SandboxRow> {
  if (!sandboxIdPattern.test(sandboxId)) throw new NotFoundError("sandbox", sandboxId);
  const [row] = await preparedQuery(ctx.db, "wrenn_load_sandbox", selectSandbox).execute({
    sandboxId,
    teamId: ctx.principal.teamId,
  });
  if (!row) throw new NotFoundError("sandbox", sandboxId);
  return repairExpired(ctx, row);
}

const selectSandbox = (db: Database) =>
  db
    .select()
    .from(sandboxes)
    .where(and(eq(sandboxes.id, sql.placeholder("sandboxId")), eq(sandboxes.teamId, sql.placeholder("teamId"))))
    .limit(1)
    .prepare("wrenn_load_sandbox");

const selectPlacedSandbox = (db: Database) =>
  db
    .select({ sandbox: sandboxes, host: hosts })
    .from(sandboxes)
    .leftJoin(hosts, eq(hosts.id, sandboxes.hostId))
    .where(and(eq(sandboxes.id, sql.placeholder("sandboxId")), eq(sandboxes.teamId, sql.placeholder("teamId"))))
    .limit(1)
    .prepare("wrenn_load_placed_sandbox");

/** A sandbox together with the way to reach its host. */
export interface PlacedSandbox {
  sandbox: SandboxRow;
  host: HostRow;
  target: HostTarget;
  agent: AgentClient;
}

/** Loads a sandbox of the caller's team and its host (one query); fails when it has no host. */
export async function loadPlacedSandbox(ctx: TeamContext, sandboxId: string): Promise<PlacedSandbox> {
  if (!sandboxIdPattern.test(sandboxId)) throw new NotFoundError("sandbox", sandboxId);
  const [row] = await preparedQuery(ctx.db, "wrenn_load_placed_sandbox", selectPlacedSandbox).execute({
    sandboxId,
    teamId: ctx.principal.teamId,
  });
  if (!row) throw new NotFoundError("sandbox", sandboxId);
  if (isPastEnd(row.sandbox, ctx.now())) row.sandbox = await repairExpired(ctx, row.sandbox);
  if (!row.host) throw new ConflictError(`sandbox ${sandboxId} is ${row.sandbox.state} and not placed on any host`);
  const target = await hostTarget(ctx, row.host);
  return { sandbox: row.sandbox, host: row.host, target, agent: ctx.agents.client(target, ctx.requestId) };
}

/** Loads a placed sandbox that must be `running` (exec and file operations). */
export async function loadRunningSandbox(ctx: TeamContext, sandboxId: string): Promise<PlacedSandbox> {
  const placed = await loadPlacedSandbox(ctx, sandboxId);
  const state = placed.sandbox.state;
  if (state === "running") return placed;
  if (state === "missing") {
    throw new ServiceError("AGENT_UNAVAILABLE", `sandbox ${sandboxId} is missing: its host is not answering`);
  }
  throw new ConflictError(`sandbox ${sandboxId} is ${state}; it must be running`);
}
