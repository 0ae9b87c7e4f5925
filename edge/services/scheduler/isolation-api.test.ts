import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IsolationClass, Runtime } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import { addFakeHost, createEdgeHarness, type EdgeHarness, type FakeAgent } from "../../../test/helpers/edge-app.js";
import { hosts } from "../../db/schema/index.js";
import { runReconcileSweep } from "../reconcile/sweep.js";

// One PGlite for the file; tests isolate themselves by team. The fleet: a roomy namespace host and a
// small gVisor host, so "least loaded" alone would always pick the namespace one.
let h: EdgeHarness;
let nsHost: { agent: FakeAgent; hostId: string };
let gvHost: { agent: FakeAgent; hostId: string };

beforeAll(async () => {
  h = await createEdgeHarness();
  nsHost = await addFakeHost(h, (a) => {
    a.capacity = { vcpus: 1000, memoryMb: 1_000_000, maxSandboxes: 1000 };
  });
  gvHost = await addFakeHost(h, (a) => {
    a.runtime = Runtime.GVISOR;
    a.isolation = IsolationClass.GVISOR;
    a.capacity = { vcpus: 16, memoryMb: 16_384, maxSandboxes: 16 };
  });
}, 60_000);

afterAll(async () => {
  await h?.close();
});

interface ErrorJson {
  error: { code: string; message: string; requestId: string; details?: Record<string, unknown> };
}

interface HostJson {
  id: string;
  runtime: string;
  isolation: string;
}

async function create(key: string, body: Record<string, unknown> = {}) {
  return h.request("POST", "/v1/sandboxes", { key, json: body });
}

async function created(res: Response) {
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string; hostId: string; runtime: string; isolation: string };
}

async function setTeam(teamId: string, body: Record<string, unknown>, key = h.adminKey) {
  return h.request("PATCH", `/v1/teams/${teamId}`, { key, json: body });
}

describe("hosts report their isolation", () => {
  it("GET /v1/hosts shows each host's runtime and isolation class", async () => {
    const res = await h.request("GET", "/v1/hosts", { key: h.adminKey });
    const listed = ((await res.json()) as { hosts: HostJson[] }).hosts;
    expect(listed.find((x) => x.id === nsHost.hostId)).toMatchObject({ runtime: "namespace", isolation: "namespace" });
    expect(listed.find((x) => x.id === gvHost.hostId)).toMatchObject({ runtime: "gvisor", isolation: "gvisor" });
  });

  it("derives the class from the runtime for an agent that reports none, and refreshes it on re-register and sweep", async () => {
    const old = await addFakeHost(h, (a) => {
      a.runtime = Runtime.QEMU;
      a.isolation = IsolationClass.UNSPECIFIED;
    });
    try {
      const row = async () => (await h.database.db.select().from(hosts).where(eq(hosts.id, old.hostId)))[0];
      expect(await row()).toMatchObject({ runtime: "qemu", isolation: "vm" });
      // The agent restarts with the namespace runtime and registers again: the host is not trusted as a VM any more.
      old.agent.runtime = Runtime.NAMESPACE;
      old.agent.isolation = IsolationClass.NAMESPACE;
      const again = await h.request("POST", "/v1/hosts", {
        key: h.adminKey,
        json: { address: old.agent.address, token: old.agent.token },
      });
      expect(((await again.json()) as HostJson).isolation).toBe("namespace");
      // …and a reconcile sweep picks up what GetHostInfo says now.
      old.agent.runtime = Runtime.GVISOR;
      old.agent.isolation = IsolationClass.GVISOR;
      const summary = await runReconcileSweep(h.services());
      expect(summary.ran).toBe(true);
      expect(await row()).toMatchObject({ runtime: "gvisor", isolation: "gvisor" });
    } finally {
      await h.request("DELETE", `/v1/hosts/${old.hostId}?force=true`, { key: h.adminKey });
    }
  });
});

describe("a sandbox can require an isolation class", () => {
  it("never lands on a weaker host, however idle it is", async () => {
    const team = await h.newTeam();
    for (let i = 0; i < 3; i++) {
      const sb = await created(await create(team.key, { isolation: "gvisor" }));
      expect(sb).toMatchObject({ hostId: gvHost.hostId, runtime: "gvisor", isolation: "gvisor" });
    }
    // Without a requirement the emptier namespace host wins, and the sandbox says what it got.
    const any = await created(await create(team.key));
    expect(any).toMatchObject({ hostId: nsHost.hostId, runtime: "namespace", isolation: "namespace" });
    const got = await h.request("GET", `/v1/sandboxes/${any.id}`, { key: team.key });
    expect(await got.json()).toMatchObject({ runtime: "namespace", isolation: "namespace" });
  });

  it("answers 503 NO_CAPACITY naming the missing class when no host qualifies", async () => {
    const team = await h.newTeam();
    const res = await create(team.key, { isolation: "vm" });
    const body = (await res.json()) as ErrorJson;
    expect({ status: res.status, code: body.error.code }).toEqual({ status: 503, code: "NO_CAPACITY" });
    expect(body.error.message).toBe(
      "no host offers isolation 'vm' or stronger (active hosts offer: gvisor, namespace)",
    );
    // A drained gVisor host does not count either.
    await h.request("POST", `/v1/hosts/${gvHost.hostId}/drain`, { key: h.adminKey });
    try {
      const drained = (await (await create(team.key, { isolation: "gvisor" })).json()) as ErrorJson;
      expect(drained.error.message).toMatch(/^no host offers isolation 'gvisor' or stronger/);
    } finally {
      await h.request("POST", `/v1/hosts/${gvHost.hostId}/activate`, { key: h.adminKey });
    }
  });

  it("refuses an unknown class", async () => {
    const team = await h.newTeam();
    const res = await create(team.key, { isolation: "container" });
    expect(res.status).toBe(400);
    expect(((await res.json()) as ErrorJson).error.details).toHaveProperty("json.isolation");
  });
});

describe("a team minimum", () => {
  it("is set by an admin only, shown to the team, and the stronger of request and minimum wins", async () => {
    const team = await h.newTeam();
    const denied = await setTeam(team.teamId, { minIsolation: "namespace" }, team.key);
    expect(denied.status).toBe(403);
    const set = await setTeam(team.teamId, { minIsolation: "gvisor" });
    expect(set.status).toBe(200);
    const mine = await h.request("GET", "/v1/teams/me", { key: team.key });
    expect(await mine.json()).toMatchObject({ id: team.teamId, minIsolation: "gvisor" });
    // Asking for less than the minimum gets the minimum.
    const weak = await created(await create(team.key, { isolation: "namespace" }));
    expect(weak).toMatchObject({ hostId: gvHost.hostId, isolation: "gvisor" });
    const none = await created(await create(team.key));
    expect(none.isolation).toBe("gvisor");
    // Asking for more than the minimum gets more (here: nothing offers it).
    const strong = (await (await create(team.key, { isolation: "vm" })).json()) as ErrorJson;
    expect(strong.error.code).toBe("NO_CAPACITY");
    // null removes the minimum again.
    await setTeam(team.teamId, { minIsolation: null });
    expect((await created(await create(team.key))).isolation).toBe("namespace");
  });

  it("holds on the E2B create route too", async () => {
    const team = await h.newTeam();
    await setTeam(team.teamId, { minIsolation: "vm" });
    const refused = await h.request("POST", "/v2/sandboxes", { key: team.key, json: { templateID: "base" } });
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { code: number; message: string }).message).toMatch(
      /^no host offers isolation 'vm' or stronger/,
    );
    await setTeam(team.teamId, { minIsolation: "gvisor" });
    const ok = await h.request("POST", "/v2/sandboxes", { key: team.key, json: { templateID: "base" } });
    expect(ok.status).toBe(201);
    const { sandboxID } = (await ok.json()) as { sandboxID: string };
    const got = await h.request("GET", `/v1/sandboxes/${sandboxID}`, { key: team.key });
    expect(await got.json()).toMatchObject({ hostId: gvHost.hostId, isolation: "gvisor" });
  });

  it("another team cannot read it, and a team key lists only its own team", async () => {
    const a = await h.newTeam();
    const b = await h.newTeam();
    expect((await h.request("GET", `/v1/teams/${b.teamId}`, { key: a.key })).status).toBe(404);
    const listed = (await (await h.request("GET", "/v1/teams", { key: a.key })).json()) as { teams: { id: string }[] };
    expect(listed.teams.map((t) => t.id)).toEqual([a.teamId]);
    const all = (await (await h.request("GET", "/v1/teams", { key: h.adminKey })).json()) as {
      teams: { id: string }[];
    };
    expect(all.teams.map((t) => t.id)).toEqual(expect.arrayContaining([a.teamId, b.teamId]));
  });
});
