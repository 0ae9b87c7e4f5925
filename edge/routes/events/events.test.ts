import { describe, expect, it } from "vitest";
import { readServerSentEvents } from "../../../sdk/sse.js";
import { expectError, newSandbox, routeStack } from "../../../test/helpers/edge-routes.js";
import { createApp } from "../../app.js";

const stack = routeStack();

interface EventJson {
  id: string;
  type: string;
  sandboxId: string | null;
  teamId: string | null;
  data: Record<string, unknown>;
  createdAt: string;
}

async function listEvents(key: string, query: string) {
  const res = await stack.h.request("GET", `/v1/events${query}`, { key });
  expect(res.status).toBe(200);
  return (await res.json()) as { events: EventJson[]; nextCursor?: string };
}

describe("GET /v1/events", () => {
  it("records each lifecycle change once, filters by type, sandbox and time, pages with a cursor, and is team-scoped", async () => {
    const team = await stack.h.newTeam();
    const other = await stack.h.newTeam();
    const a = await newSandbox(stack.h, team.key);
    const b = await newSandbox(stack.h, team.key);
    expect((await stack.h.request("DELETE", `/v1/sandboxes/${a.id}`, { key: team.key })).status).toBe(204);

    const all = await listEvents(team.key, "?order=asc");
    expect(all.events.map((e) => [e.type, e.sandboxId])).toEqual([
      ["sandbox.created", a.id],
      ["sandbox.running", a.id],
      ["sandbox.created", b.id],
      ["sandbox.running", b.id],
      ["sandbox.killed", a.id],
    ]);
    expect(all.events.every((e) => e.teamId === team.teamId && /^evt_\d+$/.test(e.id))).toBe(true);
    expect(all.events[4]?.data).toMatchObject({ fromState: "running", toState: "stopped", stopReason: "killed" });

    // Newest first by default.
    expect((await listEvents(team.key, "")).events[0]?.type).toBe("sandbox.killed");
    expect((await listEvents(team.key, "?type=sandbox.killed,sandbox.created")).events).toHaveLength(3);
    expect((await listEvents(team.key, `?sandboxId=${b.id}`)).events.map((e) => e.type)).toEqual([
      "sandbox.running",
      "sandbox.created",
    ]);
    const killedAt = all.events[4]?.createdAt ?? "";
    expect((await listEvents(team.key, `?since=${encodeURIComponent(killedAt)}`)).events.map((e) => e.type)).toEqual([
      "sandbox.killed",
    ]);
    const before = new Date(Date.parse(all.events[0]?.createdAt ?? "") - 1).toISOString();
    expect((await listEvents(team.key, `?until=${encodeURIComponent(before)}`)).events).toEqual([]);

    // Walk the list two at a time: every event once, in order, and the last page has no cursor.
    const walked: string[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 5; page++) {
      const got = await listEvents(team.key, `?order=asc&limit=2${cursor ? `&cursor=${cursor}` : ""}`);
      walked.push(...got.events.map((e) => e.id));
      cursor = got.nextCursor;
      if (!cursor) break;
    }
    expect(walked).toEqual(all.events.map((e) => e.id));

    // Another team sees none of them; a bad cursor or time is a clear 400.
    expect((await listEvents(other.key, "")).events).toEqual([]);
    await expectError(await stack.h.request("GET", "/v1/events?cursor=abc", { key: team.key }), 400, "BAD_REQUEST");
    await expectError(
      await stack.h.request("GET", "/v1/events?since=yesterday", { key: team.key }),
      400,
      "BAD_REQUEST",
    );
  });

  it("shows host events to admin keys only", async () => {
    const team = await stack.h.newTeam();
    expect((await stack.h.request("POST", `/v1/hosts/${stack.hostId}/drain`, { key: stack.h.adminKey })).status).toBe(
      200,
    );
    expect(
      (await stack.h.request("POST", `/v1/hosts/${stack.hostId}/activate`, { key: stack.h.adminKey })).status,
    ).toBe(200);
    const admin = await listEvents(stack.h.adminKey, "?type=host.drained,host.up&order=asc");
    expect(admin.events.map((e) => e.type).slice(-2)).toEqual(["host.drained", "host.up"]);
    expect(admin.events.every((e) => e.teamId === null)).toBe(true);
    expect((await listEvents(team.key, "?type=host.drained")).events).toEqual([]);
  });
});

describe("sandbox.updated", () => {
  it("records a timeout change as sandbox.updated with what changed", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const res = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/timeout`, {
      key: team.key,
      json: { timeoutSec: 900 },
    });
    expect(res.status).toBe(200);
    const updated = (await listEvents(team.key, `?sandboxId=${sb.id}&type=sandbox.updated`)).events;
    expect(updated).toHaveLength(1);
    expect(updated[0]?.data).toMatchObject({
      change: "timeout_set",
      timeoutSec: 900,
      fromState: "running",
      toState: "running",
    });
  });
});

describe("GET /v1/events/stream", () => {
  it("streams the team's events live and resumes after Last-Event-ID", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const abort = new AbortController();
    const res = await stack.h.app.request("/v1/events/stream", {
      headers: { "x-api-key": team.key },
      signal: abort.signal,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/text\/event-stream/);
    const reader = readServerSentEvents(res.body as ReadableStream<Uint8Array>);
    // The stream starts after the newest event: the sandbox's creation is not replayed.
    expect((await stack.h.request("DELETE", `/v1/sandboxes/${sb.id}`, { key: team.key })).status).toBe(204);
    const first = await reader.next();
    expect(first.value?.event).toBe("sandbox.killed");
    expect(JSON.parse(first.value?.data ?? "{}")).toMatchObject({ type: "sandbox.killed", sandboxId: sb.id });
    abort.abort();
    await reader.return(undefined);

    const created = (await listEvents(team.key, `?sandboxId=${sb.id}&type=sandbox.created`)).events[0];
    const resumed = await stack.h.app.request("/v1/events/stream", {
      headers: { "x-api-key": team.key, "last-event-id": created?.id ?? "" },
    });
    const again = readServerSentEvents(resumed.body as ReadableStream<Uint8Array>);
    const types: string[] = [];
    for (let i = 0; i < 2; i++) types.push((await again.next()).value?.event ?? "");
    expect(types).toEqual(["sandbox.running", "sandbox.killed"]);
    await again.return(undefined);
  });
});

describe("E2B lifecycle events API", () => {
  it("lists the team's and one sandbox's events in E2B's shape, with offset, order and types", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    expect((await stack.h.request("DELETE", `/v1/sandboxes/${sb.id}`, { key: team.key })).status).toBe(204);
    const res = await stack.h.request("GET", "/events/sandboxes?orderAsc=true", { key: team.key });
    expect(res.status).toBe(200);
    const listed = (await res.json()) as Array<Record<string, unknown>>;
    expect(listed.map((e) => e.type)).toEqual(["sandbox.lifecycle.created", "sandbox.lifecycle.killed"]);
    expect(listed[0]).toMatchObject({
      version: "v1",
      sandboxId: sb.id,
      sandboxTeamId: team.teamId,
      sandboxTemplateId: "minimal",
    });
    const newest = await stack.h.request("GET", `/events/sandboxes/${sb.id}?limit=1`, { key: team.key });
    expect(((await newest.json()) as Array<{ type: string }>).map((e) => e.type)).toEqual(["sandbox.lifecycle.killed"]);
    const skipped = await stack.h.request("GET", `/events/sandboxes/${sb.id}?offset=1&orderAsc=true`, {
      key: team.key,
    });
    expect(((await skipped.json()) as Array<{ type: string }>).map((e) => e.type)).toEqual([
      "sandbox.lifecycle.killed",
    ]);
    const typed = await stack.h.request("GET", "/events/sandboxes?types=sandbox.lifecycle.created", { key: team.key });
    expect(((await typed.json()) as Array<{ type: string }>).map((e) => e.type)).toEqual(["sandbox.lifecycle.created"]);
    const other = await stack.h.newTeam();
    expect(await (await stack.h.request("GET", "/events/sandboxes", { key: other.key })).json()).toEqual([]);
  });
});

describe("GET /v1/events/stream where the database lives per request (Workers)", () => {
  it("answers the events after Last-Event-ID at once, as SSE with a retry, and ends", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const created = (await listEvents(team.key, `?sandboxId=${sb.id}&type=sandbox.created`)).events[0];
    // A handle that is not the process-wide database: what a Worker's per-request Neon Pool looks like.
    const deps = stack.h.appDeps();
    const perRequest = createApp({
      ...deps,
      database: () => ({ db: Object.create(stack.h.database.db), close: async () => {} }),
    });
    const res = await perRequest.request("/v1/events/stream", {
      headers: { "x-api-key": team.key, "last-event-id": created?.id ?? "" },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/text\/event-stream/);
    const body = await res.text();
    expect(body.startsWith("retry: 100\n")).toBe(true);
    const messages = [];
    for await (const m of readServerSentEvents(new Response(body).body as ReadableStream<Uint8Array>)) messages.push(m);
    expect(messages.map((m) => m.event)).toEqual(["sandbox.running"]);
  });
});
