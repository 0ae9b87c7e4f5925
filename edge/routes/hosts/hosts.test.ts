import { describe, expect, it } from "vitest";
import { addFakeHost } from "../../../test/helpers/edge-app.js";
import { expectError, hostRow, newSandbox, routeStack } from "../../../test/helpers/edge-routes.js";

const stack = routeStack();

/** POST /v1/hosts with the admin key. */
const register = (json: Record<string, unknown>) =>
  stack.h.request("POST", "/v1/hosts", { key: stack.h.adminKey, json });

describe("hosts", () => {
  it("registers (checking the agent), lists, drains, activates and deletes", async () => {
    const extra = await addFakeHost(stack.h);
    const list = await stack.h.request("GET", "/v1/hosts", { key: stack.h.adminKey });
    const body = (await list.json()) as {
      hosts: Array<{ id: string; runtime: string; capacity: { vcpus: number }; status: string }>;
    };
    const mine = body.hosts.find((x) => x.id === extra.hostId);
    expect(mine).toMatchObject({ runtime: "namespace", capacity: { vcpus: 256 }, status: "active" });
    expect(JSON.stringify(body)).not.toContain(extra.agent.token);
    const row = await hostRow(stack.h, extra.hostId);
    expect(row?.tokenSealed).not.toContain(extra.agent.token);
    const drained = await stack.h.request("POST", `/v1/hosts/${extra.hostId}/drain`, { key: stack.h.adminKey });
    expect(await drained.json()).toMatchObject({ status: "draining" });
    const active = await stack.h.request("POST", `/v1/hosts/${extra.hostId}/activate`, { key: stack.h.adminKey });
    expect(await active.json()).toMatchObject({ status: "active" });
    expect((await stack.h.request("DELETE", `/v1/hosts/${extra.hostId}`, { key: stack.h.adminKey })).status).toBe(204);
    await expectError(
      await stack.h.request("DELETE", `/v1/hosts/${extra.hostId}`, { key: stack.h.adminKey }),
      404,
      "NOT_FOUND",
    );
    await expectError(
      await stack.h.request("POST", "/v1/hosts/host_nope/drain", { key: stack.h.adminKey }),
      404,
      "NOT_FOUND",
    );
  });

  it("re-registering an address updates it in place", async () => {
    const extra = await addFakeHost(stack.h);
    const again = await register({ address: `${extra.agent.address}/`, token: extra.agent.token });
    expect(again.status).toBe(200);
    expect(((await again.json()) as { id: string }).id).toBe(extra.hostId);
    await stack.h.request("DELETE", `/v1/hosts/${extra.hostId}`, { key: stack.h.adminKey });
  });

  it("refuses unreachable agents, wrong tokens and bad addresses", async () => {
    await expectError(
      await register({ address: "http://nobody.test:1", token: "x".repeat(20) }),
      503,
      "AGENT_UNAVAILABLE",
    );
    await expectError(
      await register({ address: stack.agent.address, token: "wrong-token-123456" }),
      502,
      "AGENT_ERROR",
    );
    await expectError(await register({ address: "ftp://x", token: "x".repeat(20) }), 400, "BAD_REQUEST");
    await expectError(await register({ address: "http://x/path", token: "x".repeat(20) }), 400, "BAD_REQUEST");
    await expectError(await register({ address: "http://x" }), 400, "BAD_REQUEST");
  });

  it("refuses to delete a host with sandboxes unless forced, then marks them lost", async () => {
    const extra = await addFakeHost(stack.h, (a) => {
      a.capacity = { vcpus: 64, memoryMb: 1_000_000, maxSandboxes: 1000 };
    });
    // Drain the main host so the new, emptier one gets the sandbox.
    await stack.h.request("POST", `/v1/hosts/${stack.hostId}/drain`, { key: stack.h.adminKey });
    const team = await stack.h.newTeam();
    let sb: { id: string; hostId: string };
    try {
      sb = await newSandbox(stack.h, team.key);
    } finally {
      await stack.h.request("POST", `/v1/hosts/${stack.hostId}/activate`, { key: stack.h.adminKey });
    }
    expect(sb.hostId).toBe(extra.hostId);
    const refused = await expectError(
      await stack.h.request("DELETE", `/v1/hosts/${extra.hostId}`, { key: stack.h.adminKey }),
      409,
      "CONFLICT",
    );
    expect(refused.error.details).toEqual({ sandboxIds: [sb.id] });
    expect(
      (await stack.h.request("DELETE", `/v1/hosts/${extra.hostId}?force=true`, { key: stack.h.adminKey })).status,
    ).toBe(204);
    const got = await stack.h.request("GET", `/v1/sandboxes/${sb.id}`, { key: team.key });
    expect(await got.json()).toMatchObject({ state: "stopped", stopReason: "lost" });
  });
});

describe("scheduler", () => {
  it("answers 503 NO_CAPACITY when no host fits, and picks the least-loaded host", async () => {
    const team = await stack.h.newTeam();
    // 250 GB of memory is over the default team quota maxMemoryMb.
    await stack.h.request("PATCH", `/v1/teams/${team.teamId}`, {
      key: stack.h.adminKey,
      json: { quotas: { maxMemoryMb: 1_000_000 } },
    });
    await expectError(
      await stack.h.request("POST", "/v1/sandboxes", { key: team.key, json: { memoryMb: 250_000 } }),
      503,
      "NO_CAPACITY",
    );
    const roomy = await addFakeHost(stack.h, (a) => {
      a.capacity = { vcpus: 1000, memoryMb: 1_000_000, maxSandboxes: 1000 };
    });
    try {
      const sb = await newSandbox(stack.h, team.key, { memoryMb: 250_000 });
      expect(sb.hostId).toBe(roomy.hostId);
      // A drained host takes nothing.
      await stack.h.request("POST", `/v1/hosts/${roomy.hostId}/drain`, { key: stack.h.adminKey });
      await expectError(
        await stack.h.request("POST", "/v1/sandboxes", { key: team.key, json: { memoryMb: 250_000 } }),
        503,
        "NO_CAPACITY",
      );
    } finally {
      await stack.h.request("DELETE", `/v1/hosts/${roomy.hostId}?force=true`, { key: stack.h.adminKey });
    }
  });
});
