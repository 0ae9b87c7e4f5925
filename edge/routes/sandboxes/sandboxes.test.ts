import { Code } from "@connectrpc/connect";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hosts, sandboxEvents, sandboxes } from "../../edge/db/schema/index.js";
import { addFakeHost, createEdgeHarness, type EdgeHarness, type FakeAgent } from "../helpers/edge-app.js";

// One PGlite for the file (its cold start costs seconds); tests isolate themselves by team.
let h: EdgeHarness;
let agent: FakeAgent;
let hostId: string;

beforeAll(async () => {
  h = await createEdgeHarness({ config: { maxUploadBytes: 64 * 1024, maxJsonBytes: 32 * 1024 } });
  ({ agent, hostId } = await addFakeHost(h));
}, 60_000);

afterAll(async () => {
  await h?.close();
});

interface ErrorJson {
  error: { code: string; message: string; requestId: string; details?: Record<string, string> };
}

async function expectError(res: Response, status: number, code: string): Promise<ErrorJson> {
  const body = (await res.json()) as ErrorJson;
  expect({ status: res.status, code: body.error?.code }).toEqual({ status, code });
  expect(body.error.requestId).toBe(res.headers.get("x-request-id"));
  expect(JSON.stringify(body)).not.toMatch(/ at .*\.ts:\d+|select |insert into/i);
  return body;
}

async function newSandbox(key: string, body: Record<string, unknown> = {}) {
  const res = await h.request("POST", "/v1/sandboxes", { key, json: body });
  expect(res.status).toBe(201);
  return (await res.json()) as {
    id: string;
    state: string;
    envdAccessToken: string;
    hostId: string;
    endAt: string | null;
  };
}

describe("sandboxes", () => {
  it("creates with defaults, placed on the host, running, with endAt", async () => {
    const team = await h.newTeam();
    const before = Date.now();
    const sb = await newSandbox(team.key);
    expect(sb).toMatchObject({
      state: "running",
      template: "minimal",
      hostId,
      vcpus: 1,
      memoryMb: 512,
      timeoutSec: 300,
      onTimeout: "kill",
    });
    expect(sb.id).toMatch(/^[a-z0-9]{20}$/);
    expect(Date.parse(sb.endAt ?? "")).toBeGreaterThanOrEqual(before + 299_000);
    expect(sb.envdAccessToken).toMatch(/^[A-Za-z0-9]{40}$/);
    // The agent got our id and the token, and the DB stores the token sealed, not in clear.
    expect(agent.sandboxes.get(sb.id)?.token).toBe(sb.envdAccessToken);
    const [row] = await h.database.db.select().from(sandboxes).where(eq(sandboxes.id, sb.id));
    expect(row?.envdTokenSealed).not.toContain(sb.envdAccessToken);
    const events = await h.database.db.select().from(sandboxEvents).where(eq(sandboxEvents.sandboxId, sb.id));
    expect(events.map((e) => e.toState)).toEqual(["pending", "running"]);
  });

  it("passes resources, env vars and metadata to the agent", async () => {
    const team = await h.newTeam();
    // timeoutSec 0 (never) needs the team quota allowNoTimeout (off by default).
    await h.request("PATCH", `/v1/teams/${team.teamId}`, {
      key: h.adminKey,
      json: { quotas: { allowNoTimeout: true } },
    });
    const sb = await newSandbox(team.key, {
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
    expect(agent.sandboxes.get(sb.id)?.sandbox.metadata).toEqual({ app: "x" });
  });

  it("rejects bad input with field messages", async () => {
    const team = await h.newTeam();
    const res = await h.request("POST", "/v1/sandboxes", {
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
    const team = await h.newTeam();
    const bad = await h.request("POST", "/v1/sandboxes", {
      key: team.key,
      body: "{nope",
      headers: { "content-type": "application/json" },
    });
    await expectError(bad, 400, "BAD_REQUEST");
    const res = await h.request("POST", "/v1/sandboxes/aaaaaaaaaaaaaaaaaaaa/exec", {
      key: team.key,
      body: "cmd=ls",
      headers: { "content-type": "text/plain" },
    });
    const body = await expectError(res, 400, "BAD_REQUEST");
    expect(body.error.message).toMatch(/application\/json/);
  });

  it("answers 413 for oversized JSON bodies", async () => {
    const team = await h.newTeam();
    const res = await h.request("POST", "/v1/sandboxes", {
      key: team.key,
      json: { metadata: { big: "x".repeat(40_000) } },
    });
    await expectError(res, 413, "PAYLOAD_TOO_LARGE");
  });

  it("marks the row error when the agent refuses, and says why", async () => {
    const team = await h.newTeam();
    const res = await h.request("POST", "/v1/sandboxes", { key: team.key, json: { template: "nosuch" } });
    // The host lists its templates, so an unknown template is refused before any row is written.
    await expectError(res, 400, "BAD_REQUEST");
    agent.failNext("createSandbox", Code.Internal, "disk full at /var/lib/wrenn");
    const failed = await h.request("POST", "/v1/sandboxes", { key: team.key, json: {} });
    const body = await expectError(failed, 502, "AGENT_ERROR");
    expect(body.error.message).not.toContain("/var/lib");
    const list = await h.request("GET", "/v1/sandboxes?state=error", { key: team.key });
    const page = (await list.json()) as { sandboxes: Array<{ state: string; error: string }> };
    expect(page.sandboxes).toHaveLength(1);
    expect(page.sandboxes[0]?.error).toMatch(/create sandbox/);
  });

  it("answers 503 AGENT_UNAVAILABLE when the agent is down, leaving an error row", async () => {
    const team = await h.newTeam();
    agent.down = true;
    try {
      const res = await h.request("POST", "/v1/sandboxes", { key: team.key, json: {} });
      await expectError(res, 503, "AGENT_UNAVAILABLE");
    } finally {
      agent.down = false;
    }
    const list = await h.request("GET", "/v1/sandboxes?state=error", { key: team.key });
    expect(((await list.json()) as { sandboxes: unknown[] }).sandboxes).toHaveLength(1);
  });

  it("gets, and hides other teams' sandboxes as 404", async () => {
    const a = await h.newTeam();
    const b = await h.newTeam();
    const sb = await newSandbox(a.key);
    const own = await h.request("GET", `/v1/sandboxes/${sb.id}`, { key: a.key });
    expect(own.status).toBe(200);
    expect(((await own.json()) as { id: string }).id).toBe(sb.id);
    await expectError(await h.request("GET", `/v1/sandboxes/${sb.id}`, { key: b.key }), 404, "NOT_FOUND");
    await expectError(await h.request("GET", "/v1/sandboxes/not-an-id", { key: a.key }), 404, "NOT_FOUND");
  });

  it("lists with state and metadata filters and stable pagination", async () => {
    const team = await h.newTeam();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++)
      ids.push((await newSandbox(team.key, { metadata: { n: String(i), group: i % 2 === 0 ? "even" : "odd" } })).id);
    const seen: string[] = [];
    let token: string | null = null;
    do {
      const url: string = `/v1/sandboxes?limit=2${token ? `&nextToken=${token}` : ""}`;
      const res = await h.request("GET", url, { key: team.key });
      expect(res.status).toBe(200);
      const page = (await res.json()) as { sandboxes: Array<{ id: string }>; nextToken: string | null };
      expect(page.sandboxes.length).toBeLessThanOrEqual(2);
      seen.push(...page.sandboxes.map((s) => s.id));
      token = page.nextToken;
    } while (token);
    expect(seen).toEqual([...ids].reverse());
    const even = await h.request("GET", `/v1/sandboxes?metadata=${encodeURIComponent("group=even")}`, {
      key: team.key,
    });
    expect(((await even.json()) as { sandboxes: unknown[] }).sandboxes).toHaveLength(3);
    const both = await h.request("GET", `/v1/sandboxes?metadata=${encodeURIComponent("group=even&n=2")}`, {
      key: team.key,
    });
    expect(((await both.json()) as { sandboxes: unknown[] }).sandboxes).toHaveLength(1);
    const paused = await h.request("GET", "/v1/sandboxes?state=paused", { key: team.key });
    expect(((await paused.json()) as { sandboxes: unknown[] }).sandboxes).toHaveLength(0);
    await expectError(await h.request("GET", "/v1/sandboxes?state=sleeping", { key: team.key }), 400, "BAD_REQUEST");
    await expectError(await h.request("GET", "/v1/sandboxes?nextToken=garbage", { key: team.key }), 400, "BAD_REQUEST");
    await expectError(await h.request("GET", "/v1/sandboxes?limit=0", { key: team.key }), 400, "BAD_REQUEST");
  });

  it("pauses, refuses a second pause, resumes, and sets the timeout", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key, { onTimeout: "pause" });
    const paused = await h.request("POST", `/v1/sandboxes/${sb.id}/pause`, { key: team.key });
    expect(paused.status).toBe(200);
    expect(await paused.json()).toMatchObject({ state: "paused", endAt: null });
    await expectError(await h.request("POST", `/v1/sandboxes/${sb.id}/pause`, { key: team.key }), 409, "CONFLICT");
    await expectError(
      await h.request("POST", `/v1/sandboxes/${sb.id}/exec`, { key: team.key, json: { cmd: "echo" } }),
      409,
      "CONFLICT",
    );
    const resumed = await h.request("POST", `/v1/sandboxes/${sb.id}/resume`, {
      key: team.key,
      json: { timeoutSec: 60 },
    });
    expect(await resumed.json()).toMatchObject({ state: "running", timeoutSec: 60 });
    await expectError(await h.request("POST", `/v1/sandboxes/${sb.id}/resume`, { key: team.key }), 409, "CONFLICT");
    const before = Date.now();
    const timeout = await h.request("POST", `/v1/sandboxes/${sb.id}/timeout`, {
      key: team.key,
      json: { timeoutSec: 1000, onTimeout: "kill" },
    });
    const body = (await timeout.json()) as { endAt: string; onTimeout: string; timeoutSec: number };
    expect(body).toMatchObject({ onTimeout: "kill", timeoutSec: 1000 });
    expect(Date.parse(body.endAt)).toBeGreaterThanOrEqual(before + 999_000);
    await expectError(
      await h.request("POST", `/v1/sandboxes/${sb.id}/timeout`, { key: team.key, json: { timeoutSec: -1 } }),
      400,
      "BAD_REQUEST",
    );
  });

  it("rolls a failed pause back to running", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    agent.failNext("pauseSandbox", Code.Unavailable);
    await expectError(
      await h.request("POST", `/v1/sandboxes/${sb.id}/pause`, { key: team.key }),
      503,
      "AGENT_UNAVAILABLE",
    );
    const res = await h.request("GET", `/v1/sandboxes/${sb.id}`, { key: team.key });
    expect(((await res.json()) as { state: string }).state).toBe("running");
  });

  it("deletes (idempotently), and still marks stopped when the agent already forgot it", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    expect((await h.request("DELETE", `/v1/sandboxes/${sb.id}`, { key: team.key })).status).toBe(204);
    expect(agent.sandboxes.has(sb.id)).toBe(false);
    const got = await h.request("GET", `/v1/sandboxes/${sb.id}`, { key: team.key });
    expect(await got.json()).toMatchObject({ state: "stopped", stopReason: "killed" });
    expect((await h.request("DELETE", `/v1/sandboxes/${sb.id}`, { key: team.key })).status).toBe(204);
    const other = await newSandbox(team.key);
    agent.sandboxes.delete(other.id);
    expect((await h.request("DELETE", `/v1/sandboxes/${other.id}`, { key: team.key })).status).toBe(204);
  });

  it("records a delete as killed even when a sweep marked the sandbox lost while the agent destroyed it", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    agent.afterNext.set("destroySandbox", async () => {
      // What the reconcile sweep writes when it lists the host after the destroy and before the edge's update.
      const [row] = await h.database.db.select().from(sandboxes).where(eq(sandboxes.id, sb.id));
      await h.database.db
        .update(sandboxes)
        .set({ state: "stopped", stopReason: "lost", version: (row?.version ?? 0) + 1 })
        .where(eq(sandboxes.id, sb.id));
    });
    expect((await h.request("DELETE", `/v1/sandboxes/${sb.id}`, { key: team.key })).status).toBe(204);
    const got = await h.request("GET", `/v1/sandboxes/${sb.id}`, { key: team.key });
    expect(await got.json()).toMatchObject({ state: "stopped", stopReason: "killed" });
  });

  it("refuses a delete the agent answers with a definite error, keeping the row", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    agent.failNext("destroySandbox", Code.Internal);
    await expectError(await h.request("DELETE", `/v1/sandboxes/${sb.id}`, { key: team.key }), 502, "AGENT_ERROR");
    const got = await h.request("GET", `/v1/sandboxes/${sb.id}`, { key: team.key });
    expect(((await got.json()) as { state: string }).state).toBe("running");
  });
});

describe("exec", () => {
  it("runs cmd under bash -l -c without args, and as given with args", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    const res = await h.request("POST", `/v1/sandboxes/${sb.id}/exec`, { key: team.key, json: { cmd: "echo hello" } });
    expect(await res.json()).toEqual({
      stdout: "hello\n",
      stderr: "",
      exitCode: 0,
      encoding: "utf-8",
      truncated: false,
      durationMs: 1,
    });
    const direct = await h.request("POST", `/v1/sandboxes/${sb.id}/exec`, {
      key: team.key,
      json: { cmd: "exit", args: ["3"] },
    });
    expect(await direct.json()).toMatchObject({ exitCode: 3, stderr: "bye\n" });
    const stdin = await h.request("POST", `/v1/sandboxes/${sb.id}/exec`, {
      key: team.key,
      json: { cmd: "cat", args: [], stdin: "piped" },
    });
    expect(await stdin.json()).toMatchObject({ stdout: "piped" });
  });

  it("returns non-UTF-8 output as base64", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    const res = await h.request("POST", `/v1/sandboxes/${sb.id}/exec`, { key: team.key, json: { cmd: "binary" } });
    const body = (await res.json()) as { stdout: string; encoding: string };
    expect(body.encoding).toBe("base64");
    expect([...Buffer.from(body.stdout, "base64")]).toEqual([0xff, 0xfe, 0x00, 0x41]);
  });

  it("streams events over SSE", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    const res = await h.request("POST", `/v1/sandboxes/${sb.id}/exec/stream`, {
      key: team.key,
      json: { cmd: "echo streamed" },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/text\/event-stream/);
    const text = await res.text();
    const events = [...text.matchAll(/event: (\w+)\ndata: (.*)\n/g)].map((m) => [m[1], JSON.parse(m[2] ?? "null")]);
    expect(events).toEqual([
      ["start", { pid: 42 }],
      ["stdout", { data: "streamed\n", encoding: "utf-8" }],
      ["exit", { exitCode: 0 }],
    ]);
  });

  it("cancels the agent call when the client goes away", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    const res = await h.request("POST", `/v1/sandboxes/${sb.id}/exec/stream`, { key: team.key, json: { cmd: "hang" } });
    const reader = res.body?.getReader();
    if (!reader) throw new Error("no body");
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toMatch(/event: start/);
    expect(agent.cancelledStreams).not.toContain(sb.id);
    await reader.cancel();
    await expect.poll(() => agent.cancelledStreams, { timeout: 5000 }).toContain(sb.id);
  });

  it("reports a stream failure as an error event", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    agent.failNext("execStream", Code.Unavailable);
    const res = await h.request("POST", `/v1/sandboxes/${sb.id}/exec/stream`, {
      key: team.key,
      json: { cmd: "echo x" },
    });
    expect(await res.text()).toMatch(/event: error\ndata: \{"code":"AGENT_UNAVAILABLE"/);
  });

  it("validates the body", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    const body = await expectError(
      await h.request("POST", `/v1/sandboxes/${sb.id}/exec`, { key: team.key, json: { args: [1] } }),
      400,
      "BAD_REQUEST",
    );
    expect(Object.keys(body.error.details ?? {})).toEqual(expect.arrayContaining(["json.cmd", "json.args.0"]));
  });
});

describe("files", () => {
  function form(path: string | undefined, content: Uint8Array<ArrayBuffer> | string): FormData {
    const f = new FormData();
    if (path !== undefined) f.set("path", path);
    f.set("file", new Blob([content]), "upload.bin");
    return f;
  }

  it("writes (multipart) and reads back byte-identical binary content", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    const bytes = new Uint8Array(50_000).map((_, i) => (i * 7) & 0xff);
    const w = await h.request("POST", `/v1/sandboxes/${sb.id}/files/write`, {
      key: team.key,
      body: form("/home/user/data.bin", bytes),
    });
    expect(w.status).toBe(200);
    expect(await w.json()).toEqual({ path: "/home/user/data.bin", size: 50_000 });
    const r = await h.request("POST", `/v1/sandboxes/${sb.id}/files/read`, {
      key: team.key,
      json: { path: "/home/user/data.bin" },
    });
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("application/octet-stream");
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(bytes);
  });

  it("takes the path from the query string too", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    const w = await h.request("POST", `/v1/sandboxes/${sb.id}/files/write?path=/home/user/q.txt`, {
      key: team.key,
      body: form(undefined, "q"),
    });
    expect(w.status).toBe(200);
    expect(agent.sandboxes.get(sb.id)?.files.get("/home/user/q.txt")).toEqual(new TextEncoder().encode("q"));
  });

  it("answers 413 above the upload limit and leaves the file untouched", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    const big = new Uint8Array(200 * 1024);
    const res = await h.request("POST", `/v1/sandboxes/${sb.id}/files/write`, {
      key: team.key,
      body: form("/home/user/big", big),
    });
    await expectError(res, 413, "PAYLOAD_TOO_LARGE");
    expect(agent.sandboxes.get(sb.id)?.files.has("/home/user/big")).toBe(false);
  });

  it("answers 413 when a body without Content-Length grows past the limit", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    const { bytes, contentType } = await (async () => {
      const req = new Request("http://x/", {
        method: "POST",
        body: form("/home/user/big2", new Uint8Array(100 * 1024)),
      });
      return { bytes: new Uint8Array(await req.arrayBuffer()), contentType: req.headers.get("content-type") ?? "" };
    })();
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < bytes.length; i += 8192) c.enqueue(bytes.slice(i, i + 8192));
        c.close();
      },
    });
    const res = await h.app.request(`/v1/sandboxes/${sb.id}/files/write`, {
      method: "POST",
      headers: { "x-api-key": team.key, "content-type": contentType },
      body: stream,
      duplex: "half",
    } as RequestInit);
    await expectError(res, 413, "PAYLOAD_TOO_LARGE");
  });

  it("rejects uploads that are not multipart, lack a path or a file", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    await expectError(
      await h.request("POST", `/v1/sandboxes/${sb.id}/files/write`, { key: team.key, json: { path: "/x" } }),
      400,
      "BAD_REQUEST",
    );
    await expectError(
      await h.request("POST", `/v1/sandboxes/${sb.id}/files/write`, { key: team.key, body: form(undefined, "x") }),
      400,
      "BAD_REQUEST",
    );
    const onlyPath = new FormData();
    onlyPath.set("path", "/x");
    await expectError(
      await h.request("POST", `/v1/sandboxes/${sb.id}/files/write`, { key: team.key, body: onlyPath }),
      400,
      "BAD_REQUEST",
    );
  });

  it("answers 404 for a missing file and 503 when the agent is down", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    await expectError(
      await h.request("POST", `/v1/sandboxes/${sb.id}/files/read`, { key: team.key, json: { path: "/nope" } }),
      404,
      "NOT_FOUND",
    );
    agent.down = true;
    try {
      await expectError(
        await h.request("POST", `/v1/sandboxes/${sb.id}/files/read`, { key: team.key, json: { path: "/nope" } }),
        503,
        "AGENT_UNAVAILABLE",
      );
      await expectError(
        await h.request("POST", `/v1/sandboxes/${sb.id}/files/list`, { key: team.key, json: { path: "/" } }),
        503,
        "AGENT_UNAVAILABLE",
      );
    } finally {
      agent.down = false;
    }
  });

  it("lists, makes directories and removes paths", async () => {
    const team = await h.newTeam();
    const sb = await newSandbox(team.key);
    await h.request("POST", `/v1/sandboxes/${sb.id}/files/write`, {
      key: team.key,
      body: form("/home/user/a.txt", "aaa"),
    });
    const mk = await h.request("POST", `/v1/sandboxes/${sb.id}/files/mkdir`, {
      key: team.key,
      json: { path: "/home/user/dir" },
    });
    expect(await mk.json()).toMatchObject({ entry: { path: "/home/user/dir", type: "directory" } });
    await expectError(
      await h.request("POST", `/v1/sandboxes/${sb.id}/files/mkdir`, {
        key: team.key,
        json: { path: "/home/user/dir" },
      }),
      409,
      "CONFLICT",
    );
    const ls = await h.request("POST", `/v1/sandboxes/${sb.id}/files/list`, {
      key: team.key,
      json: { path: "/home/user" },
    });
    const listing = (await ls.json()) as { entries: Array<{ name: string; type: string; size: number }> };
    expect(listing.entries).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ name: "a.txt", type: "file", size: 3 }),
        expect.objectContaining({ name: "dir", type: "directory" }),
      ]),
    );
    expect(
      (
        await h.request("POST", `/v1/sandboxes/${sb.id}/files/remove`, {
          key: team.key,
          json: { path: "/home/user/a.txt" },
        })
      ).status,
    ).toBe(204);
    await expectError(
      await h.request("POST", `/v1/sandboxes/${sb.id}/files/remove`, {
        key: team.key,
        json: { path: "/home/user/a.txt" },
      }),
      404,
      "NOT_FOUND",
    );
    await expectError(
      await h.request("POST", `/v1/sandboxes/${sb.id}/files/list`, { key: team.key, json: { path: "" } }),
      400,
      "BAD_REQUEST",
    );
  });
});

describe("hosts", () => {
  it("registers (checking the agent), lists, drains, activates and deletes", async () => {
    const extra = await addFakeHost(h);
    const list = await h.request("GET", "/v1/hosts", { key: h.adminKey });
    const body = (await list.json()) as {
      hosts: Array<{ id: string; runtime: string; capacity: { vcpus: number }; status: string }>;
    };
    const mine = body.hosts.find((x) => x.id === extra.hostId);
    expect(mine).toMatchObject({ runtime: "namespace", capacity: { vcpus: 256 }, status: "active" });
    expect(JSON.stringify(body)).not.toContain(extra.agent.token);
    const [row] = await h.database.db.select().from(hosts).where(eq(hosts.id, extra.hostId));
    expect(row?.tokenSealed).not.toContain(extra.agent.token);
    const drained = await h.request("POST", `/v1/hosts/${extra.hostId}/drain`, { key: h.adminKey });
    expect(await drained.json()).toMatchObject({ status: "draining" });
    const active = await h.request("POST", `/v1/hosts/${extra.hostId}/activate`, { key: h.adminKey });
    expect(await active.json()).toMatchObject({ status: "active" });
    expect((await h.request("DELETE", `/v1/hosts/${extra.hostId}`, { key: h.adminKey })).status).toBe(204);
    await expectError(await h.request("DELETE", `/v1/hosts/${extra.hostId}`, { key: h.adminKey }), 404, "NOT_FOUND");
    await expectError(await h.request("POST", "/v1/hosts/host_nope/drain", { key: h.adminKey }), 404, "NOT_FOUND");
  });

  it("re-registering an address updates it in place", async () => {
    const extra = await addFakeHost(h);
    const again = await h.request("POST", "/v1/hosts", {
      key: h.adminKey,
      json: { address: `${extra.agent.address}/`, token: extra.agent.token },
    });
    expect(again.status).toBe(200);
    expect(((await again.json()) as { id: string }).id).toBe(extra.hostId);
    await h.request("DELETE", `/v1/hosts/${extra.hostId}`, { key: h.adminKey });
  });

  it("refuses unreachable agents, wrong tokens and bad addresses", async () => {
    await expectError(
      await h.request("POST", "/v1/hosts", {
        key: h.adminKey,
        json: { address: "http://nobody.test:1", token: "x".repeat(20) },
      }),
      503,
      "AGENT_UNAVAILABLE",
    );
    await expectError(
      await h.request("POST", "/v1/hosts", {
        key: h.adminKey,
        json: { address: agent.address, token: "wrong-token-123456" },
      }),
      502,
      "AGENT_ERROR",
    );
    await expectError(
      await h.request("POST", "/v1/hosts", { key: h.adminKey, json: { address: "ftp://x", token: "x".repeat(20) } }),
      400,
      "BAD_REQUEST",
    );
    await expectError(
      await h.request("POST", "/v1/hosts", {
        key: h.adminKey,
        json: { address: "http://x/path", token: "x".repeat(20) },
      }),
      400,
      "BAD_REQUEST",
    );
    await expectError(
      await h.request("POST", "/v1/hosts", { key: h.adminKey, json: { address: "http://x" } }),
      400,
      "BAD_REQUEST",
    );
  });

  it("refuses to delete a host with sandboxes unless forced, then marks them lost", async () => {
    const extra = await addFakeHost(h, (a) => {
      a.capacity = { vcpus: 64, memoryMb: 1_000_000, maxSandboxes: 1000 };
    });
    // Drain the main host so the new, emptier one gets the sandbox.
    await h.request("POST", `/v1/hosts/${hostId}/drain`, { key: h.adminKey });
    const team = await h.newTeam();
    let sb: { id: string; hostId: string };
    try {
      sb = await newSandbox(team.key);
    } finally {
      await h.request("POST", `/v1/hosts/${hostId}/activate`, { key: h.adminKey });
    }
    expect(sb.hostId).toBe(extra.hostId);
    const refused = await expectError(
      await h.request("DELETE", `/v1/hosts/${extra.hostId}`, { key: h.adminKey }),
      409,
      "CONFLICT",
    );
    expect(refused.error.details).toEqual({ sandboxIds: [sb.id] });
    expect((await h.request("DELETE", `/v1/hosts/${extra.hostId}?force=true`, { key: h.adminKey })).status).toBe(204);
    const got = await h.request("GET", `/v1/sandboxes/${sb.id}`, { key: team.key });
    expect(await got.json()).toMatchObject({ state: "stopped", stopReason: "lost" });
  });
});

describe("scheduler", () => {
  it("answers 503 NO_CAPACITY when no host fits, and picks the least-loaded host", async () => {
    const team = await h.newTeam();
    // 250 GB of memory is over the default team quota maxMemoryMb.
    await h.request("PATCH", `/v1/teams/${team.teamId}`, {
      key: h.adminKey,
      json: { quotas: { maxMemoryMb: 1_000_000 } },
    });
    await expectError(
      await h.request("POST", "/v1/sandboxes", { key: team.key, json: { memoryMb: 250_000 } }),
      503,
      "NO_CAPACITY",
    );
    const roomy = await addFakeHost(h, (a) => {
      a.capacity = { vcpus: 1000, memoryMb: 1_000_000, maxSandboxes: 1000 };
    });
    try {
      const sb = await newSandbox(team.key, { memoryMb: 250_000 });
      expect(sb.hostId).toBe(roomy.hostId);
      // A drained host takes nothing.
      await h.request("POST", `/v1/hosts/${roomy.hostId}/drain`, { key: h.adminKey });
      await expectError(
        await h.request("POST", "/v1/sandboxes", { key: team.key, json: { memoryMb: 250_000 } }),
        503,
        "NO_CAPACITY",
      );
    } finally {
      await h.request("DELETE", `/v1/hosts/${roomy.hostId}?force=true`, { key: h.adminKey });
    }
  });
});

describe("api keys", () => {
  it("creates (secret once), lists without secrets, and revokes", async () => {
    const team = await h.newTeam();
    const created = await h.request("POST", "/v1/api-keys", { key: team.key, json: { name: "ci" } });
    expect(created.status).toBe(201);
    const key = (await created.json()) as {
      id: string;
      secret: string;
      prefix: string;
      teamId: string;
      isAdmin: boolean;
    };
    expect(key).toMatchObject({ teamId: team.teamId, isAdmin: false });
    expect(key.secret.startsWith(key.prefix)).toBe(true);
    expect((await h.request("GET", "/v1/sandboxes", { key: key.secret })).status).toBe(200);
    const list = await h.request("GET", "/v1/api-keys", { key: team.key });
    const text = await list.text();
    expect(text).not.toContain(key.secret);
    expect((JSON.parse(text) as { apiKeys: unknown[] }).apiKeys).toHaveLength(2);
    const revoked = await h.request("DELETE", `/v1/api-keys/${key.id}`, { key: team.key });
    expect(((await revoked.json()) as { revokedAt: string | null }).revokedAt).not.toBeNull();
    await expectError(await h.request("GET", "/v1/sandboxes", { key: key.secret }), 401, "UNAUTHORIZED");
  });

  it("keeps non-admins inside their team", async () => {
    const a = await h.newTeam();
    const b = await h.newTeam();
    await expectError(
      await h.request("POST", "/v1/api-keys", { key: a.key, json: { isAdmin: true } }),
      403,
      "FORBIDDEN",
    );
    await expectError(
      await h.request("POST", "/v1/api-keys", { key: a.key, json: { teamId: b.teamId } }),
      403,
      "FORBIDDEN",
    );
    await expectError(await h.request("GET", "/v1/api-keys?all=true", { key: a.key }), 403, "FORBIDDEN");
    await expectError(await h.request("DELETE", `/v1/api-keys/${b.keyId}`, { key: a.key }), 404, "NOT_FOUND");
  });

  it("lets admins create keys in new or existing teams", async () => {
    const made = await h.request("POST", "/v1/api-keys", { key: h.adminKey, json: { name: "t", newTeamName: "acme" } });
    const key = (await made.json()) as { teamId: string; secret: string };
    expect(key.teamId).toMatch(/^team_/);
    const again = await h.request("POST", "/v1/api-keys", { key: h.adminKey, json: { teamId: key.teamId } });
    expect(((await again.json()) as { teamId: string }).teamId).toBe(key.teamId);
    await expectError(
      await h.request("POST", "/v1/api-keys", { key: h.adminKey, json: { teamId: "team_nope" } }),
      404,
      "NOT_FOUND",
    );
  });
});

describe("meta", () => {
  it("serves health, JSON 404s, request ids, and forwards them to the agent", async () => {
    const health = await h.request("GET", "/health");
    expect(await health.json()).toMatchObject({ status: "ok" });
    await expectError(await h.request("GET", "/nope"), 404, "NOT_FOUND");
    const team = await h.newTeam();
    await expectError(await h.request("GET", "/v1/nope", { key: team.key }), 404, "NOT_FOUND");
    const res = await h.request("POST", "/v1/sandboxes", {
      key: team.key,
      json: {},
      headers: { "x-request-id": "trace-1234567890" },
    });
    expect(res.headers.get("x-request-id")).toBe("trace-1234567890");
    expect(h.fakes?.requestIds).toContain("trace-1234567890");
  });

  it("serves OpenAPI 3.1 as JSON and YAML, and the docs page with local assets", async () => {
    const json = await h.request("GET", "/openapi.json");
    const doc = (await json.json()) as {
      openapi: string;
      paths: Record<string, Record<string, { operationId: string }>>;
    };
    expect(doc.openapi).toBe("3.1.0");
    const ops = Object.values(doc.paths).flatMap((p) => Object.values(p).map((o) => o.operationId));
    expect(ops).toEqual(
      expect.arrayContaining(["createSandbox", "execCommandStream", "writeFile", "registerHost", "revokeApiKey"]),
    );
    const yaml = await h.request("GET", "/openapi.yaml");
    expect(yaml.headers.get("content-type")).toMatch(/yaml/);
    expect(await yaml.text()).toMatch(/^openapi: 3\.1\.0/m);
    const docs = await h.request("GET", "/docs");
    const html = await docs.text();
    expect(html).toContain("/docs/assets/swagger-ui-bundle.js");
    expect(html).not.toMatch(/cdn|unpkg|jsdelivr/);
    const js = await h.request("GET", "/docs/assets/swagger-ui-bundle.js");
    expect(js.status).toBe(200);
    expect((await js.text()).length).toBeGreaterThan(100_000);
    expect((await h.request("GET", "/docs/assets/..%2Fpackage.json")).status).toBe(404);
  });
});
