import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  expectError,
  newSandbox,
  routeStack,
  sandboxEventRows,
  sandboxRow,
  updateSandboxRow,
} from "../../../test/helpers/edge-routes.js";

const stack = routeStack();

describe("sandboxes", () => {
  it("creates with defaults, placed on the host, running, with endAt", async () => {
    const team = await stack.h.newTeam();
    const before = Date.now();
    const sb = await newSandbox(stack.h, team.key);
    expect(sb).toMatchObject({
      state: "running",
      template: "minimal",
      hostId: stack.hostId,
      vcpus: 1,
      memoryMb: 512,
      timeoutSec: 300,
      onTimeout: "kill",
    });
    expect(sb.id).toMatch(/^[a-z0-9]{20}$/);
    expect(Date.parse(sb.endAt ?? "")).toBeGreaterThanOrEqual(before + 299_000);
    expect(sb.envdAccessToken).toMatch(/^[A-Za-z0-9]{40}$/);
    // The agent got our id and the token, and the DB stores the token sealed, not in clear.
    expect(stack.agent.sandboxes.get(sb.id)?.token).toBe(sb.envdAccessToken);
    const row = await sandboxRow(stack.h, sb.id);
    expect(row?.envdTokenSealed).not.toContain(sb.envdAccessToken);
    const events = await sandboxEventRows(stack.h, sb.id);
    expect(events.map((e) => e.toState)).toEqual(["pending", "running"]);
  });

  it("passes resources, env vars and metadata to the agent", async () => {
    const team = await stack.h.newTeam();
    // timeoutSec 0 (never) needs the team quota allowNoTimeout (off by default).
    await stack.h.request("PATCH", `/v1/teams/${team.teamId}`, {
      key: stack.h.adminKey,
      json: { quotas: { allowNoTimeout: true } },
    });
    const sb = await newSandbox(stack.h, team.key, {
      vcpus: 2,
      memoryMb: 1024,
      timeoutSec: 0,
      onTimeout: "pause",
      metadata: { app: "x" },
      envVars: { A: "1" },
    });
    expect(sb).toMatchObject({
      vcpus: 2,
      memoryMb: 1024,
      timeoutSec: 0,
      onTimeout: "pause",
      endAt: null,
      metadata: { app: "x" },
    });
    expect(stack.agent.sandboxes.get(sb.id)?.sandbox.metadata).toEqual({ app: "x" });
  });

  it("rejects bad input with field messages", async () => {
    const team = await stack.h.newTeam();
    const res = await stack.h.request("POST", "/v1/sandboxes", {
      key: team.key,
      json: { vcpus: 0, memoryMb: "lots", onTimeout: "explode", template: "../etc" },
    });
    const body = await expectError(res, 400, "BAD_REQUEST");
    expect(Object.keys(body.error.details ?? {}).sort()).toEqual([
      "json.memoryMb",
      "json.onTimeout",
      "json.template",
      "json.vcpus",
    ]);
  });

  it("rejects malformed JSON and a wrong content type", async () => {
    const team = await stack.h.newTeam();
    const bad = await stack.h.request("POST", "/v1/sandboxes", {
      key: team.key,
      body: "{nope",
      headers: { "content-type": "application/json" },
    });
    await expectError(bad, 400, "BAD_REQUEST");
    const res = await stack.h.request("POST", "/v1/sandboxes/aaaaaaaaaaaaaaaaaaaa/exec", {
      key: team.key,
      body: "cmd=ls",
      headers: { "content-type": "text/plain" },
    });
    const body = await expectError(res, 400, "BAD_REQUEST");
    expect(body.error.message).toMatch(/application\/json/);
  });

  it("answers 413 for oversized JSON bodies", async () => {
    const team = await stack.h.newTeam();
    const res = await stack.h.request("POST", "/v1/sandboxes", {
      key: team.key,
      json: { metadata: { big: "x".repeat(40_000) } },
    });
    await expectError(res, 413, "PAYLOAD_TOO_LARGE");
  });

  it("marks the row error when the agent refuses, and says why", async () => {
    const team = await stack.h.newTeam();
    const res = await stack.h.request("POST", "/v1/sandboxes", { key: team.key, json: { template: "nosuch" } });
    // The host lists its templates, so an unknown template is refused before any row is written.
    await expectError(res, 400, "BAD_REQUEST");
    stack.agent.failNext("createSandbox", Code.Internal, "disk full at /var/lib/wrenn");
    const failed = await stack.h.request("POST", "/v1/sandboxes", { key: team.key, json: {} });
    const body = await expectError(failed, 502, "AGENT_ERROR");
    expect(body.error.message).not.toContain("/var/lib");
    const list = await stack.h.request("GET", "/v1/sandboxes?state=error", { key: team.key });
    const page = (await list.json()) as { sandboxes: Array<{ state: string; error: string }> };
    expect(page.sandboxes).toHaveLength(1);
    expect(page.sandboxes[0]?.error).toMatch(/create sandbox/);
  });

  it("answers 503 AGENT_UNAVAILABLE when the agent is down, leaving an error row", async () => {
    const team = await stack.h.newTeam();
    stack.agent.down = true;
    try {
      const res = await stack.h.request("POST", "/v1/sandboxes", { key: team.key, json: {} });
      await expectError(res, 503, "AGENT_UNAVAILABLE");
    } finally {
      stack.agent.down = false;
    }
    const list = await stack.h.request("GET", "/v1/sandboxes?state=error", { key: team.key });
    expect(((await list.json()) as { sandboxes: unknown[] }).sandboxes).toHaveLength(1);
  });

  it("gets, and hides other teams' sandboxes as 404", async () => {
    const a = await stack.h.newTeam();
    const b = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, a.key);
    const own = await stack.h.request("GET", `/v1/sandboxes/${sb.id}`, { key: a.key });
    expect(own.status).toBe(200);
    expect(((await own.json()) as { id: string }).id).toBe(sb.id);
    await expectError(await stack.h.request("GET", `/v1/sandboxes/${sb.id}`, { key: b.key }), 404, "NOT_FOUND");
    await expectError(await stack.h.request("GET", "/v1/sandboxes/not-an-id", { key: a.key }), 404, "NOT_FOUND");
  });

  it("lists with state and metadata filters and stable pagination", async () => {
    const team = await stack.h.newTeam();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++)
      ids.push(
        (await newSandbox(stack.h, team.key, { metadata: { n: String(i), group: i % 2 === 0 ? "even" : "odd" } })).id,
      );
    const seen: string[] = [];
    let token: string | null = null;
    do {
      const url: string = `/v1/sandboxes?limit=2${token ? `&nextToken=${token}` : ""}`;
      const res = await stack.h.request("GET", url, { key: team.key });
      expect(res.status).toBe(200);
      const page = (await res.json()) as { sandboxes: Array<{ id: string }>; nextToken: string | null };
      expect(page.sandboxes.length).toBeLessThanOrEqual(2);
      seen.push(...page.sandboxes.map((s) => s.id));
      token = page.nextToken;
    } while (token);
    expect(seen).toEqual([...ids].reverse());
    const even = await stack.h.request("GET", `/v1/sandboxes?metadata=${encodeURIComponent("group=even")}`, {
      key: team.key,
    });
    expect(((await even.json()) as { sandboxes: unknown[] }).sandboxes).toHaveLength(3);
    const both = await stack.h.request("GET", `/v1/sandboxes?metadata=${encodeURIComponent("group=even&n=2")}`, {
      key: team.key,
    });
    expect(((await both.json()) as { sandboxes: unknown[] }).sandboxes).toHaveLength(1);
    const paused = await stack.h.request("GET", "/v1/sandboxes?state=paused", { key: team.key });
    expect(((await paused.json()) as { sandboxes: unknown[] }).sandboxes).toHaveLength(0);
    await expectError(
      await stack.h.request("GET", "/v1/sandboxes?state=sleeping", { key: team.key }),
      400,
      "BAD_REQUEST",
    );
    await expectError(
      await stack.h.request("GET", "/v1/sandboxes?nextToken=garbage", { key: team.key }),
      400,
      "BAD_REQUEST",
    );
    await expectError(await stack.h.request("GET", "/v1/sandboxes?limit=0", { key: team.key }), 400, "BAD_REQUEST");
  });

  it("pauses, refuses a second pause, resumes, and sets the timeout", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key, { onTimeout: "pause" });
    const paused = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/pause`, { key: team.key });
    expect(paused.status).toBe(200);
    expect(await paused.json()).toMatchObject({ state: "paused", endAt: null });
    await expectError(
      await stack.h.request("POST", `/v1/sandboxes/${sb.id}/pause`, { key: team.key }),
      409,
      "CONFLICT",
    );
    await expectError(
      await stack.h.request("POST", `/v1/sandboxes/${sb.id}/exec`, { key: team.key, json: { cmd: "echo" } }),
      409,
      "CONFLICT",
    );
    const resumed = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/resume`, {
      key: team.key,
      json: { timeoutSec: 60 },
    });
    expect(await resumed.json()).toMatchObject({ state: "running", timeoutSec: 60 });
    await expectError(
      await stack.h.request("POST", `/v1/sandboxes/${sb.id}/resume`, { key: team.key }),
      409,
      "CONFLICT",
    );
    const before = Date.now();
    const timeout = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/timeout`, {
      key: team.key,
      json: { timeoutSec: 1000, onTimeout: "kill" },
    });
    const body = (await timeout.json()) as { endAt: string; onTimeout: string; timeoutSec: number };
    expect(body).toMatchObject({ onTimeout: "kill", timeoutSec: 1000 });
    expect(Date.parse(body.endAt)).toBeGreaterThanOrEqual(before + 999_000);
    await expectError(
      await stack.h.request("POST", `/v1/sandboxes/${sb.id}/timeout`, { key: team.key, json: { timeoutSec: -1 } }),
      400,
      "BAD_REQUEST",
    );
  });

  it("rolls a failed pause back to running", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    stack.agent.failNext("pauseSandbox", Code.Unavailable);
    await expectError(
      await stack.h.request("POST", `/v1/sandboxes/${sb.id}/pause`, { key: team.key }),
      503,
      "AGENT_UNAVAILABLE",
    );
    const res = await stack.h.request("GET", `/v1/sandboxes/${sb.id}`, { key: team.key });
    expect(((await res.json()) as { state: string }).state).toBe("running");
  });

  it("deletes (idempotently), and still marks stopped when the agent already forgot it", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    expect((await stack.h.request("DELETE", `/v1/sandboxes/${sb.id}`, { key: team.key })).status).toBe(204);
    expect(stack.agent.sandboxes.has(sb.id)).toBe(false);
    const got = await stack.h.request("GET", `/v1/sandboxes/${sb.id}`, { key: team.key });
    expect(await got.json()).toMatchObject({ state: "stopped", stopReason: "killed" });
    expect((await stack.h.request("DELETE", `/v1/sandboxes/${sb.id}`, { key: team.key })).status).toBe(204);
    const other = await newSandbox(stack.h, team.key);
    stack.agent.sandboxes.delete(other.id);
    expect((await stack.h.request("DELETE", `/v1/sandboxes/${other.id}`, { key: team.key })).status).toBe(204);
  });

  it("records a delete as killed even when a sweep marked the sandbox lost while the agent destroyed it", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    stack.agent.afterNext.set("destroySandbox", async () => {
      // What the reconcile sweep writes when it lists the host after the destroy and before the edge's update.
      const row = await sandboxRow(stack.h, sb.id);
      await updateSandboxRow(stack.h, sb.id, {
        state: "stopped",
        stopReason: "lost",
        version: (row?.version ?? 0) + 1,
      });
    });
    expect((await stack.h.request("DELETE", `/v1/sandboxes/${sb.id}`, { key: team.key })).status).toBe(204);
    const got = await stack.h.request("GET", `/v1/sandboxes/${sb.id}`, { key: team.key });
    expect(await got.json()).toMatchObject({ state: "stopped", stopReason: "killed" });
  });

  it("refuses a delete the agent answers with a definite error, keeping the row", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    stack.agent.failNext("destroySandbox", Code.Internal);
    await expectError(await stack.h.request("DELETE", `/v1/sandboxes/${sb.id}`, { key: team.key }), 502, "AGENT_ERROR");
    const got = await stack.h.request("GET", `/v1/sandboxes/${sb.id}`, { key: team.key });
    expect(((await got.json()) as { state: string }).state).toBe("running");
  });
});
