import { eq } from "drizzle-orm";
import { expect } from "vitest";
import { type SandboxRow, sandboxes } from "../../edge/db/schema/index.js";
import { newSandboxId } from "../../edge/services/ids.js";
import type { EdgeHarness } from "./edge-app.js";

/**
 * What the reconcile and quota tests do to an edge harness behind its API: register an agent (real or
 * scripted, over HTTP) as a host, write sandbox rows as if the edge had made them, read rows back.
 */

/** Registers the agent listening at `url` as a host (expects 201) and returns the host's id. */
export async function registerHost(h: EdgeHarness, agent: { url: string; token: string }): Promise<string> {
  const res = await h.request("POST", "/v1/hosts", {
    key: h.adminKey,
    json: { address: agent.url, token: agent.token },
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

/** Inserts a sandbox row of `teamId` on `hostId` (a small minimal-template sandbox unless `fields` say otherwise). */
export async function seedSandbox(
  h: EdgeHarness,
  owner: { teamId: string; hostId: string },
  fields: Partial<SandboxRow> & { state: SandboxRow["state"] },
): Promise<string> {
  const id = fields.id ?? newSandboxId();
  await h.database.db.insert(sandboxes).values({
    id,
    teamId: owner.teamId,
    hostId: owner.hostId,
    template: "minimal",
    vcpus: 1,
    memoryMb: 256,
    timeoutSec: 300,
    envdTokenSealed: await h.secrets.seal("envd-token"),
    ...fields,
  });
  return id;
}

/** The sandbox's row; throws when there is none. */
export async function storedSandbox(h: EdgeHarness, id: string): Promise<SandboxRow> {
  const [r] = await h.database.db.select().from(sandboxes).where(eq(sandboxes.id, id));
  if (!r) throw new Error(`no row ${id}`);
  return r;
}

/** A new team with the given quota overrides, set by the admin (expects 200). */
export async function teamWithQuotas(h: EdgeHarness, quotas: Record<string, unknown>) {
  const team = await h.newTeam();
  const res = await h.request("PATCH", `/v1/teams/${team.teamId}`, { key: h.adminKey, json: { quotas } });
  expect(res.status).toBe(200);
  return team;
}
