import { Code } from "@connectrpc/connect";
import { Sandbox as E2bSandbox, SandboxNotFoundError } from "e2b";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { serveOnLoopback } from "../../../test/helpers/cli-run.js";
import { createEdgeHarness, type EdgeHarness, type FakeAgent } from "../../../test/helpers/edge-app.js";
import { expectError, newSandbox } from "../../../test/helpers/edge-routes.js";
import { addSnapshottingHost, type SnapshottingAgent } from "../../../test/helpers/snapshotting-agent.js";

/**
 * Snapshots and fork through the E2B surface (with the official `e2b` SDK's static calls, which need
 * no envd) and /v1, against the edge over PGlite with fake agents at the Connect boundary that keep
 * snapshots as copies of a sandbox's files. The real agent and the SDK end to end are in
 * test/integration/e2b-snapshots.test.ts.
 */

let h: EdgeHarness;
let agent: SnapshottingAgent;
let hostId = "";
let server: Awaited<ReturnType<typeof serveOnLoopback>>;

/** Writes a file into a fake sandbox, as a guest would. */
function writeFile(sandboxId: string, path: string, text: string): void {
  const sb = agent.sandboxes.get(sandboxId);
  if (!sb) throw new Error(`no sandbox ${sandboxId}`);
  sb.files.set(path, new TextEncoder().encode(text));
}

function readFile(a: FakeAgent, sandboxId: string, path: string): string | undefined {
  const bytes = a.sandboxes.get(sandboxId)?.files.get(path);
  return bytes ? new TextDecoder().decode(bytes) : undefined;
}

beforeAll(async () => {
  h = await createEdgeHarness({ config: { sandboxDomain: "sbx.wrenn.test" } });
  ({ agent, hostId } = await addSnapshottingHost(h));
  server = await serveOnLoopback(h.app.fetch);
}, 60_000);

afterAll(async () => {
  await server?.close();
  await h?.close();
});

const sdk = (key: string) => ({ apiKey: key, apiUrl: server.url, domain: "localhost" });

describe("E2B snapshots with the official SDK", () => {
  it("createSnapshot, listSnapshots (paged), create from it (its files), deleteSnapshot, then create fails with 404", async () => {
    const team = await h.newTeam();
    const source = await newSandbox(h, team.key);
    writeFile(source.id, "/home/user/hello.txt", "from the source");

    const snap = await E2bSandbox.createSnapshot(source.id, sdk(team.key));
    expect(snap.snapshotId).toMatch(/^[a-z0-9]{20}$/);
    expect(snap.names).toEqual([]);
    const named = await E2bSandbox.createSnapshot(source.id, { ...sdk(team.key), name: "my-snap" });
    expect(named.names).toEqual(["my-snap"]);

    // Two snapshots, one per page: the paginator follows X-Next-Token.
    const paginator = E2bSandbox.listSnapshots({ ...sdk(team.key), limit: 1 });
    const seen: string[] = [];
    while (paginator.hasNext) seen.push(...(await paginator.nextItems()).map((s) => s.snapshotId));
    expect(seen).toEqual([named.snapshotId, snap.snapshotId]);
    const bySandbox = await E2bSandbox.listSnapshots({ ...sdk(team.key), sandboxId: source.id }).nextItems();
    expect(bySandbox).toHaveLength(2);
    const byName = await E2bSandbox.listSnapshots({ ...sdk(team.key), name: "my-snap" }).nextItems();
    expect(byName).toEqual([{ snapshotId: named.snapshotId, names: ["my-snap"] }]);

    const fromSnap = await E2bSandbox.create(snap.snapshotId, sdk(team.key));
    expect(agent.creates.at(-1)?.snapshotId).toBe(snap.snapshotId);
    expect(agent.creates.at(-1)?.template).toBe("minimal");
    expect(readFile(agent, fromSnap.sandboxId, "/home/user/hello.txt")).toBe("from the source");
    const fromName = await E2bSandbox.create("my-snap", sdk(team.key));
    expect(agent.creates.at(-1)?.snapshotId).toBe(named.snapshotId);
    expect(readFile(agent, fromName.sandboxId, "/home/user/hello.txt")).toBe("from the source");

    expect(await E2bSandbox.deleteSnapshot(snap.snapshotId, sdk(team.key))).toBe(true);
    expect(agent.snapshots.has(snap.snapshotId)).toBe(false);
    expect(await E2bSandbox.deleteSnapshot(snap.snapshotId, sdk(team.key))).toBe(false);
    const failed = await E2bSandbox.create(snap.snapshotId, sdk(team.key)).catch((err: unknown) => err);
    expect(failed).toMatchObject({ statusCode: 404 });
    expect(String(failed)).toMatch(/snapshot .* was not found/);
    const left = await E2bSandbox.listSnapshots(sdk(team.key)).nextItems();
    expect(left.map((s) => s.snapshotId)).toEqual([named.snapshotId]);
  });

  it("fork({ count: 2 }) starts two sandboxes from one snapshot, which is not kept", async () => {
    const team = await h.newTeam();
    const source = await newSandbox(h, team.key);
    writeFile(source.id, "/home/user/state.txt", "before fork");
    const sandbox = await E2bSandbox.connect(source.id, sdk(team.key));
    const forks = await sandbox.fork({ count: 2 });
    expect(forks).toHaveLength(2);
    const ids = forks.map((f) => {
      if (!(f instanceof E2bSandbox)) throw f;
      return f.sandboxId;
    });
    expect(new Set([...ids, source.id]).size).toBe(3);
    const snapshotIds = new Set(agent.creates.slice(-2).map((c) => c.snapshotId));
    expect(snapshotIds.size).toBe(1);
    for (const id of ids) expect(readFile(agent, id, "/home/user/state.txt")).toBe("before fork");
    // The fork's snapshot was only their starting point.
    expect(agent.snapshots.has([...snapshotIds][0] ?? "")).toBe(false);
    expect(await E2bSandbox.listSnapshots(sdk(team.key)).nextItems()).toEqual([]);
  });

  it("fork reports each fork's failure on its own: over the team's quota, the rest fail with 429", async () => {
    const team = await h.newTeam();
    const patched = await h.request("PATCH", `/v1/teams/${team.teamId}`, {
      key: h.adminKey,
      json: { quotas: { maxRunningSandboxes: 2 } },
    });
    expect(patched.status, await patched.clone().text()).toBe(200);
    const source = await newSandbox(h, team.key);
    const res = await fetch(`${server.url}/sandboxes/${source.id}/fork`, {
      method: "POST",
      headers: { "x-api-key": team.key, "content-type": "application/json" },
      body: JSON.stringify({ count: 3 }),
    });
    expect(res.status).toBe(201);
    const results = (await res.json()) as Array<{
      sandbox?: { sandboxID: string };
      error?: { code: number; message: string };
    }>;
    expect(results).toHaveLength(3);
    expect(results[0]?.sandbox?.sandboxID).toMatch(/^[a-z0-9]{20}$/);
    expect(results.slice(1).map((r) => r.error?.code)).toEqual([429, 429]);
  });

  it("answers a bad fork count with E2B's 400 and an unknown sandbox with 404", async () => {
    const team = await h.newTeam();
    const source = await newSandbox(h, team.key);
    for (const count of [0, 11, 1.5]) {
      const res = await fetch(`${server.url}/sandboxes/${source.id}/fork`, {
        method: "POST",
        headers: { "x-api-key": team.key, "content-type": "application/json" },
        body: JSON.stringify({ count }),
      });
      const body = (await res.json()) as { code: number; message: string };
      expect({ status: res.status, code: body.code }).toEqual({ status: 400, code: 400 });
      expect(body.message).toMatch(/count/);
    }
    await expect(E2bSandbox.fork("nosuchsandbox0000000", { ...sdk(team.key), count: 1 })).rejects.toBeInstanceOf(
      SandboxNotFoundError,
    );
    await expect(E2bSandbox.createSnapshot("nosuchsandbox0000000", sdk(team.key))).rejects.toBeInstanceOf(
      SandboxNotFoundError,
    );
  });

  it("keeps snapshots to their team: another team's is 404 everywhere", async () => {
    const a = await h.newTeam();
    const b = await h.newTeam();
    const source = await newSandbox(h, a.key);
    const snap = await E2bSandbox.createSnapshot(source.id, sdk(a.key));
    expect(await E2bSandbox.listSnapshots(sdk(b.key)).nextItems()).toEqual([]);
    expect(await E2bSandbox.deleteSnapshot(snap.snapshotId, sdk(b.key))).toBe(false);
    const created = await E2bSandbox.create(snap.snapshotId, sdk(b.key)).catch((err: unknown) => err);
    expect(created).toMatchObject({ statusCode: 404 });
    await expect(E2bSandbox.createSnapshot(source.id, sdk(b.key))).rejects.toBeInstanceOf(SandboxNotFoundError);
    await expectError(await h.request("GET", `/v1/snapshots/${snap.snapshotId}`, { key: b.key }), 404, "NOT_FOUND");
    await expectError(await h.request("DELETE", `/v1/snapshots/${snap.snapshotId}`, { key: b.key }), 404, "NOT_FOUND");
    await expectError(
      await h.request("POST", "/v1/sandboxes", { key: b.key, json: { snapshotId: snap.snapshotId } }),
      404,
      "NOT_FOUND",
    );
    // Still there for its own team.
    expect((await h.request("GET", `/v1/snapshots/${snap.snapshotId}`, { key: a.key })).status).toBe(200);
  });
});

describe("/v1 snapshots", () => {
  it("create, get, list, create a sandbox from it, fork, delete", async () => {
    const team = await h.newTeam();
    const source = await newSandbox(h, team.key, { vcpus: 2, memoryMb: 1024 });
    writeFile(source.id, "/home/user/v1.txt", "v1");
    const res = await h.request("POST", `/v1/sandboxes/${source.id}/snapshots`, {
      key: team.key,
      json: { name: "v1-snap" },
    });
    expect(res.status, await res.clone().text()).toBe(201);
    const snap = (await res.json()) as Record<string, unknown>;
    expect(snap).toMatchObject({
      name: "v1-snap",
      sourceSandboxId: source.id,
      hostId,
      template: "minimal",
      runtime: "namespace",
      keepsMemory: false,
      vcpus: 2,
      memoryMb: 1024,
      sizeBytes: 4096,
      state: "ready",
    });
    const again = await h.request("POST", `/v1/sandboxes/${source.id}/snapshots`, {
      key: team.key,
      json: { name: "v1-snap" },
    });
    await expectError(again, 409, "CONFLICT");
    await expectError(
      await h.request("POST", `/v1/sandboxes/${source.id}/snapshots`, { key: team.key, json: { name: "Bad Name!" } }),
      400,
      "BAD_REQUEST",
    );
    const got = await h.request("GET", `/v1/snapshots/${snap.id}`, { key: team.key });
    expect(await got.json()).toEqual(snap);
    const list = (await (await h.request("GET", "/v1/snapshots", { key: team.key })).json()) as {
      snapshots: Array<{ id: string }>;
      nextToken: string | null;
    };
    expect(list.snapshots.map((s) => s.id)).toEqual([snap.id]);
    expect(list.nextToken).toBeNull();

    // The snapshot's resources win over the request's: a memory snapshot must resume in the same size.
    const fromSnap = await newSandbox(h, team.key, { snapshotId: snap.id, vcpus: 1, memoryMb: 256 });
    expect(fromSnap).toMatchObject({ hostId });
    expect(agent.creates.at(-1)).toMatchObject({ snapshotId: snap.id, vcpus: 2, memoryMb: 1024 });
    expect(readFile(agent, fromSnap.id, "/home/user/v1.txt")).toBe("v1");

    const forked = await h.request("POST", `/v1/sandboxes/${source.id}/fork`, { key: team.key, json: { count: 2 } });
    expect(forked.status, await forked.clone().text()).toBe(201);
    const forks = ((await forked.json()) as { forks: Array<{ sandbox?: { id: string; envdAccessToken: string } }> })
      .forks;
    expect(forks).toHaveLength(2);
    for (const f of forks) {
      expect(f.sandbox?.envdAccessToken).toBeTruthy();
      expect(readFile(agent, f.sandbox?.id ?? "", "/home/user/v1.txt")).toBe("v1");
    }
    await expectError(
      await h.request("POST", `/v1/sandboxes/${source.id}/fork`, { key: team.key, json: { count: 11 } }),
      400,
      "BAD_REQUEST",
    );

    expect((await h.request("DELETE", `/v1/snapshots/${snap.id}`, { key: team.key })).status).toBe(204);
    await expectError(await h.request("DELETE", `/v1/snapshots/${snap.id}`, { key: team.key }), 404, "NOT_FOUND");
    const deleted = (await (await h.request("GET", `/v1/snapshots/${snap.id}`, { key: team.key })).json()) as {
      state: string;
    };
    expect(deleted.state).toBe("deleted");
    await expectError(
      await h.request("POST", "/v1/sandboxes", { key: team.key, json: { snapshotId: snap.id } }),
      404,
      "NOT_FOUND",
    );
    await expectError(await h.request("GET", "/v1/snapshots?state=bogus", { key: team.key }), 400, "BAD_REQUEST");
  });

  it("a failed agent call leaves an `error` row, never listed, and the agent's answer as the error", async () => {
    const team = await h.newTeam();
    const source = await newSandbox(h, team.key);
    agent.failSnapshots = Code.Internal;
    try {
      const res = await h.request("POST", `/v1/sandboxes/${source.id}/snapshots`, { key: team.key });
      await expectError(res, 502, "AGENT_ERROR");
    } finally {
      agent.failSnapshots = undefined;
    }
    const listed = (await (await h.request("GET", "/v1/snapshots", { key: team.key })).json()) as {
      snapshots: unknown[];
    };
    expect(listed.snapshots).toEqual([]);
    const failed = (await (await h.request("GET", "/v1/snapshots?state=error", { key: team.key })).json()) as {
      snapshots: Array<{ state: string; error: string }>;
    };
    expect(failed.snapshots).toHaveLength(1);
    expect(failed.snapshots[0]?.error).toMatch(/create snapshot/);
  });

  it("starts a sandbox from a snapshot only on the host that holds it: a busier host still wins, a drained one is a clear 503", async () => {
    const team = await h.newTeam();
    const source = await newSandbox(h, team.key);
    const snap = (await (
      await h.request("POST", `/v1/sandboxes/${source.id}/snapshots`, { key: team.key })
    ).json()) as { id: string; hostId: string };
    // A second, idle host: the scheduler would prefer it for a plain create.
    const other = await addSnapshottingHost(h, (a) => {
      a.keepsMemory = true;
    });
    // GET /v1/hosts says what a snapshot on each host keeps.
    const listed = (await (await h.request("GET", "/v1/hosts", { key: h.adminKey })).json()) as {
      hosts: Array<{ id: string; snapshotsKeepMemory: boolean }>;
    };
    const keeps = new Map(listed.hosts.map((x) => [x.id, x.snapshotsKeepMemory]));
    expect([keeps.get(snap.hostId), keeps.get(other.hostId)]).toEqual([false, true]);
    const fromSnap = await newSandbox(h, team.key, { snapshotId: snap.id });
    expect(fromSnap.hostId).toBe(snap.hostId);
    expect(other.agent.creates).toEqual([]);

    const drained = await h.request("POST", `/v1/hosts/${snap.hostId}/drain`, { key: h.adminKey });
    expect(drained.status, await drained.clone().text()).toBeLessThan(300);
    try {
      const refused = await expectError(
        await h.request("POST", "/v1/sandboxes", { key: team.key, json: { snapshotId: snap.id } }),
        503,
        "NO_CAPACITY",
      );
      expect(refused.error.message).toMatch(
        new RegExp(`host ${snap.hostId}, which holds snapshot ${snap.id}, is draining`),
      );
      expect(other.agent.creates).toEqual([]);
    } finally {
      await h.request("POST", `/v1/hosts/${snap.hostId}/activate`, { key: h.adminKey });
      await h.request("POST", `/v1/hosts/${other.hostId}/drain`, { key: h.adminKey });
    }
  });
});
