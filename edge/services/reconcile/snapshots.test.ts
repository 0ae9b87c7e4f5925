import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEdgeHarness, type EdgeHarness } from "../../../test/helpers/edge-app.js";
import { addSnapshottingHost, type SnapshottingAgent } from "../../../test/helpers/snapshotting-agent.js";
import { hosts, snapshots } from "../../db/schema/index.js";
import { agentFor } from "../hosts/target.js";
import { resolveReconcileOptions } from "./options.js";
import { reconcileHostSnapshots } from "./snapshots.js";

// The snapshot half of the reconcile sweep over PGlite, with a fake agent that keeps snapshots.
let h: EdgeHarness;
let agent: SnapshottingAgent;
let hostId = "";
const options = resolveReconcileOptions({ stuckAfterMs: 60_000, orphanGraceMs: 60_000 });

beforeAll(async () => {
  h = await createEdgeHarness();
  ({ agent, hostId } = await addSnapshottingHost(h));
}, 60_000);

afterAll(async () => {
  await h?.close();
});

async function sweep() {
  const [host] = await h.database.db.select().from(hosts).where(eq(hosts.id, hostId));
  if (!host) throw new Error("no host");
  return reconcileHostSnapshots(h.services(), await agentFor(h.services(), host), hostId, options);
}

async function snapshotOf(key: string): Promise<string> {
  const sb = await h.request("POST", "/v1/sandboxes", { key, json: {} });
  const { id } = (await sb.json()) as { id: string };
  const res = await h.request("POST", `/v1/sandboxes/${id}/snapshots`, { key });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

const stateOf = async (id: string) =>
  (await h.database.db.select().from(snapshots).where(eq(snapshots.id, id)))[0]?.state;

describe("snapshot sweep", () => {
  it("leaves snapshots the host holds alone, and marks one it no longer reports lost", async () => {
    const team = await h.newTeam();
    const kept = await snapshotOf(team.key);
    const gone = await snapshotOf(team.key);
    agent.snapshots.delete(gone);
    const outcome = await sweep();
    expect(outcome).toMatchObject({ answered: true, lost: 1 });
    expect(await stateOf(kept)).toBe("ready");
    expect(await stateOf(gone)).toBe("lost");
    const res = await h.request("POST", "/v1/sandboxes", { key: team.key, json: { snapshotId: gone } });
    expect(res.status).toBe(404);
    const shown = (await (await h.request("GET", `/v1/snapshots/${gone}`, { key: team.key })).json()) as {
      error: string;
    };
    expect(shown.error).toMatch(/no longer holds/);
  });

  it("deletes copies the edge deleted (the host was down then) and settles a create that died with the edge", async () => {
    const team = await h.newTeam();
    const id = await snapshotOf(team.key);
    agent.down = true;
    try {
      expect((await h.request("DELETE", `/v1/snapshots/${id}`, { key: team.key })).status).toBe(204);
    } finally {
      agent.down = false;
    }
    expect(agent.snapshots.has(id)).toBe(true);

    // A row left `creating` long ago, whose copy the host holds.
    const stuck = await snapshotOf(team.key);
    const longAgo = new Date(Date.now() - 120_000);
    await h.database.db.update(snapshots).set({ state: "creating", createdAt: longAgo }).where(eq(snapshots.id, stuck));

    const outcome = await sweep();
    expect(outcome).toMatchObject({ abandoned: 1, deletedOnHost: 2 });
    expect(agent.snapshots.has(id)).toBe(false);
    expect(agent.snapshots.has(stuck)).toBe(false);
    expect(await stateOf(stuck)).toBe("error");
  });

  it("spares a copy with no row inside the grace (a create in flight), and deletes it after", async () => {
    const team = await h.newTeam();
    const id = await snapshotOf(team.key);
    await h.database.db.delete(snapshots).where(eq(snapshots.id, id));
    expect((await sweep()).deletedOnHost).toBe(0);
    expect(agent.snapshots.has(id)).toBe(true);
    const held = agent.snapshots.get(id);
    if (held) held.info.createdAt = timestampFromDate(new Date(Date.now() - 120_000));
    expect((await sweep()).deletedOnHost).toBe(1);
    expect(agent.snapshots.has(id)).toBe(false);
  });
});
