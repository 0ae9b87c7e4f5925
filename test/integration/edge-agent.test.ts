import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NodeEdge } from "../../edge/node.js";
import { IMAGES_ROOT, requireImage, requireRoot, TEMPLATE } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { startEdgeForAgent } from "../helpers/edge-stack.js";
import { type PostgresServer, startPostgres } from "../helpers/postgres.js";

/**
 * The edge on Node, over HTTP, driving a real host agent (namespace runtime) — once with embedded
 * PGlite and once with a real PostgreSQL server the harness starts.
 */

const adminKey = `wrn_it_admin_${randomBytes(16).toString("hex")}`;
const encryptionKey = randomBytes(32).toString("hex");

interface Stack {
  edge: NodeEdge;
  agent: AgentProcess;
  pg?: PostgresServer;
  dataDir?: string;
}

async function startStack(database: "pglite" | "postgres"): Promise<Stack> {
  requireRoot();
  await requireImage();
  const pg = database === "postgres" ? await startPostgres() : undefined;
  let agent: AgentProcess | undefined;
  try {
    agent = await startAgentProcess({ runtime: "namespace", rootDir: IMAGES_ROOT });
    const edge = await startEdgeForAgent(agent, {
      adminKey,
      encryptionKey,
      ...(pg ? { env: { DATABASE_URL: pg.url } } : {}),
    });
    return pg ? { edge, agent, pg } : { edge, agent };
  } catch (err) {
    await agent?.stop().catch(() => {});
    await pg?.stop();
    throw err;
  }
}

async function stopStack(stack: Stack | undefined): Promise<void> {
  if (!stack) return;
  await stack.edge.close().catch(() => {});
  await stack.agent.stop().catch(() => {});
  await stack.pg?.stop();
}

describe.each(["pglite", "postgres"] as const)("edge + real agent (%s)", (database) => {
  let stack: Stack | undefined;
  let key = "";
  const call = async (method: string, path: string, json?: unknown): Promise<Response> => {
    if (!stack) throw new Error("stack not started");
    return fetch(`${stack.edge.url}${path}`, {
      method,
      headers: { "x-api-key": key, ...(json !== undefined ? { "content-type": "application/json" } : {}) },
      ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
    });
  };

  beforeAll(async () => {
    stack = await startStack(database);
    const made = await fetch(`${stack.edge.url}/v1/api-keys`, {
      method: "POST",
      headers: { "x-api-key": adminKey, "content-type": "application/json" },
      body: JSON.stringify({ name: "it", newTeamName: `it-${database}` }),
    });
    key = ((await made.json()) as { secret: string }).secret;
  });

  afterAll(async () => {
    await stopStack(stack);
  });

  it("creates, execs, moves 50 MiB byte-identical, pauses, resumes and deletes a sandbox", async () => {
    const agent = stack?.agent;
    if (!agent) throw new Error("no agent");
    const created = await call("POST", "/v1/sandboxes", {
      template: TEMPLATE,
      timeoutSec: 600,
      metadata: { suite: database },
    });
    const createdText = await created.text();
    expect(created.status, createdText).toBe(201);
    const sb = JSON.parse(createdText) as { id: string; state: string; hostId: string };
    expect(sb.state).toBe("running");
    const onAgent = await agent.client.getSandbox({ sandboxId: sb.id });
    expect(onAgent.sandbox?.sandboxId).toBe(sb.id);

    // exec: a bare cmd runs under a login bash; args run the program directly.
    const shell = await call("POST", `/v1/sandboxes/${sb.id}/exec`, { cmd: "echo $((6*7)) && echo err >&2; exit 3" });
    expect(await shell.json()).toMatchObject({ stdout: "42\n", stderr: "err\n", exitCode: 3, encoding: "utf-8" });
    const direct = await call("POST", `/v1/sandboxes/${sb.id}/exec`, { cmd: "/bin/echo", args: ["a b", "$HOME"] });
    expect(await direct.json()).toMatchObject({ stdout: "a b $HOME\n", exitCode: 0 });
    const binary = await call("POST", `/v1/sandboxes/${sb.id}/exec`, { cmd: "printf '\\377\\376A'" });
    const bin = (await binary.json()) as { stdout: string; encoding: string };
    expect(bin.encoding).toBe("base64");
    expect([...Buffer.from(bin.stdout, "base64")]).toEqual([0xff, 0xfe, 0x41]);

    // exec over SSE.
    const streamed = await call("POST", `/v1/sandboxes/${sb.id}/exec/stream`, {
      cmd: "for i in 1 2 3; do echo $i; done",
    });
    const sse = await streamed.text();
    expect(sse).toMatch(/event: start/);
    expect(
      [...sse.matchAll(/event: stdout\ndata: (.*)\n/g)]
        .map((m) => (JSON.parse(m[1] ?? "{}") as { data: string }).data)
        .join(""),
    ).toBe("1\n2\n3\n");
    expect(sse).toMatch(/event: exit\ndata: \{"exitCode":0\}/);

    // 50 MiB upload, streamed, read back byte-identical.
    const payload = randomBytes(50 * 1024 * 1024);
    const digest = createHash("sha256").update(payload).digest("hex");
    const form = new FormData();
    form.set("path", "/home/user/big.bin");
    form.set("file", new Blob([payload]), "big.bin");
    const written = await fetch(`${stack?.edge.url}/v1/sandboxes/${sb.id}/files/write`, {
      method: "POST",
      headers: { "x-api-key": key },
      body: form,
    });
    expect(written.status, await written.clone().text()).toBe(200);
    expect(await written.json()).toMatchObject({ size: payload.length });
    const read = await call("POST", `/v1/sandboxes/${sb.id}/files/read`, { path: "/home/user/big.bin" });
    expect(read.status).toBe(200);
    const back = Buffer.from(await read.arrayBuffer());
    expect(back.length).toBe(payload.length);
    expect(createHash("sha256").update(back).digest("hex")).toBe(digest);
    const inGuest = await call("POST", `/v1/sandboxes/${sb.id}/exec`, {
      cmd: "sha256sum /home/user/big.bin | cut -d' ' -f1",
    });
    expect(((await inGuest.json()) as { stdout: string }).stdout.trim()).toBe(digest);

    // list / mkdir / remove.
    expect((await call("POST", `/v1/sandboxes/${sb.id}/files/mkdir`, { path: "/home/user/d/e" })).status).toBe(200);
    const ls = await call("POST", `/v1/sandboxes/${sb.id}/files/list`, { path: "/home/user" });
    const names = ((await ls.json()) as { entries: Array<{ name: string }> }).entries.map((e) => e.name);
    expect(names).toEqual(expect.arrayContaining(["big.bin", "d"]));
    expect((await call("POST", `/v1/sandboxes/${sb.id}/files/remove`, { path: "/home/user/d" })).status).toBe(204);
    expect(
      (await call("POST", `/v1/sandboxes/${sb.id}/files/read`, { path: "/home/user/d/e" })).status,
    ).toBeGreaterThanOrEqual(400);

    // pause / resume: files and the sandbox survive.
    const paused = await call("POST", `/v1/sandboxes/${sb.id}/pause`);
    expect(paused.status, await paused.clone().text()).toBe(200);
    expect(((await paused.json()) as { state: string }).state).toBe("paused");
    expect((await call("POST", `/v1/sandboxes/${sb.id}/exec`, { cmd: "true" })).status).toBe(409);
    const resumed = await call("POST", `/v1/sandboxes/${sb.id}/resume`, {});
    expect(resumed.status, await resumed.clone().text()).toBe(200);
    expect(((await resumed.json()) as { state: string }).state).toBe("running");
    const after = await call("POST", `/v1/sandboxes/${sb.id}/exec`, { cmd: "stat -c %s /home/user/big.bin" });
    expect(((await after.json()) as { stdout: string }).stdout.trim()).toBe(String(payload.length));

    // timeout
    const timeout = await call("POST", `/v1/sandboxes/${sb.id}/timeout`, { timeoutSec: 900 });
    expect(timeout.status).toBe(200);

    // delete: gone from the agent, stopped in the API.
    expect((await call("DELETE", `/v1/sandboxes/${sb.id}`)).status).toBe(204);
    const listed = await agent.client.listSandboxes({});
    expect(listed.sandboxes.map((s) => s.sandboxId)).not.toContain(sb.id);
    const got = await call("GET", `/v1/sandboxes/${sb.id}`);
    expect(await got.json()).toMatchObject({ state: "stopped", stopReason: "killed" });
  });

  it("answers 404 when the agent no longer has the sandbox, and 503 for an agent that does not answer", async () => {
    const created = await call("POST", "/v1/sandboxes", { template: TEMPLATE });
    expect(created.status).toBe(201);
    const sb = (await created.json()) as { id: string };
    await stack?.agent.client.destroySandbox({ sandboxId: sb.id });
    const exec = await call("POST", `/v1/sandboxes/${sb.id}/exec`, { cmd: "true" });
    expect(exec.status).toBe(404);
    expect((await call("DELETE", `/v1/sandboxes/${sb.id}`)).status).toBe(204);
    // Nothing listens on port 9 of loopback: registering it answers 503 and stores nothing.
    const res = await fetch(`${stack?.edge.url}/v1/hosts`, {
      method: "POST",
      headers: { "x-api-key": adminKey, "content-type": "application/json" },
      body: JSON.stringify({ address: "http://127.0.0.1:9", token: "x".repeat(32) }),
    });
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("AGENT_UNAVAILABLE");
  });
});
