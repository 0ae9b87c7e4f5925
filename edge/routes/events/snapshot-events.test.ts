import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEdgeHarness, type EdgeHarness } from "../../../test/helpers/edge-app.js";
import { newSandbox } from "../../../test/helpers/edge-routes.js";
import { addSnapshottingHost } from "../../../test/helpers/snapshotting-agent.js";

// snapshot.created is recorded with the snapshot turning ready, against a fake agent that takes snapshots.
let h: EdgeHarness;

beforeAll(async () => {
  h = await createEdgeHarness();
  await addSnapshottingHost(h);
}, 60_000);

afterAll(async () => {
  await h?.close();
});

describe("snapshot.created", () => {
  it("is recorded once when a snapshot is ready, naming the snapshot and its sandbox", async () => {
    const team = await h.newTeam();
    const source = await newSandbox(h, team.key);
    const res = await h.request("POST", `/v1/sandboxes/${source.id}/snapshots`, {
      key: team.key,
      json: { name: "s1" },
    });
    expect(res.status).toBe(201);
    const snap = (await res.json()) as { snapshotId?: string; id?: string };
    const listed = await h.request("GET", "/v1/events?type=snapshot.created", { key: team.key });
    const { events } = (await listed.json()) as {
      events: Array<{ type: string; sandboxId: string; data: Record<string, unknown> }>;
    };
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      sandboxId: source.id,
      data: { name: "s1", snapshotId: snap.snapshotId ?? snap.id },
    });
  });
});
