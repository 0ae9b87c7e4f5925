import { createHmac, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sandboxCommand } from "../../cli/commands/sandbox.js";
import { parseEnv } from "../../edge/env.js";
import { noopLogger } from "../../edge/logger.js";
import { type NodeEdge, startNodeEdge } from "../../edge/node.js";
import { IMAGES_ROOT, requireImage, requireRoot, TEMPLATE } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { runCli } from "../helpers/cli-run.js";
import { newTeamKey, startEdgeForAgent } from "../helpers/edge-stack.js";

/**
 * Issue 22's command history and command-finished callbacks against the real stack: a real agent
 * (the suite's runtime: namespace, or gVisor in the integration-gvisor project) whose envd records
 * every process it runs (sampled every 300 ms), the Node edge on PGlite pulling the records before
 * reads and, for background commands owed a callback, every 2 s (its sweep is off), a loopback
 * receiver for callbacks (the edge allows private callback URLs only because the test says
 * WRENN_WEBHOOKS_ALLOW_PRIVATE=true), and a second edge over the first one's database (PGlite on
 * disk) for the restart case.
 */

const adminKey = `wrn_cmd_admin_${randomBytes(16).toString("hex")}`;
const encryptionKey = randomBytes(32).toString("hex");
/** PGlite on disk, so a second edge can take over the first one's database (the restart case). */
let dataDir = "";
// No sweep: the history comes from the pulls before reads, callbacks from the pending-callback poll (default 2 s).
const edgeEnv = { WRENN_RECONCILE_INTERVAL_SEC: "0", WRENN_WEBHOOKS_ALLOW_PRIVATE: "true" };
let agent: AgentProcess | undefined;
let edge: NodeEdge | undefined;
let key = "";

interface Received {
  headers: IncomingMessage["headers"];
  body: string;
}
const received: Received[] = [];
let receiver: Server | undefined;
let receiverUrl = "";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function call(method: string, path: string, json?: unknown): Promise<{ status: number; body: unknown }> {
  if (!edge) throw new Error("edge not started");
  const res = await fetch(`${edge.url}${path}`, {
    method,
    headers: { "x-api-key": key, ...(json !== undefined ? { "content-type": "application/json" } : {}) },
    ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text === "" ? undefined : JSON.parse(text) };
}

interface Command {
  commandId: string;
  commandLine: string;
  exitCode: number | null;
  endedAt: string | null;
  durationMs: number | null;
  stdout: { head: string; tail: string; bytes: number };
  stderr: { head: string; tail: string; bytes: number };
  background: boolean;
  callbackState: string | null;
}

async function historyOf(sandboxId: string): Promise<Command[]> {
  const all: Command[] = [];
  let token: string | null = null;
  do {
    const got = await call(
      "GET",
      `/v1/sandboxes/${sandboxId}/commands?limit=20${token ? `&nextToken=${encodeURIComponent(token)}` : ""}`,
    );
    expect(got.status, JSON.stringify(got.body)).toBe(200);
    const page = got.body as { commands: Command[]; nextToken: string | null };
    all.push(...page.commands);
    token = page.nextToken;
  } while (token);
  return all;
}

/** Polls the history until a command matching `match` has ended (the sweep pulls every second). */
async function waitForCommand(sandboxId: string, match: (c: Command) => boolean, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = (await historyOf(sandboxId)).find((c) => match(c) && c.endedAt !== null);
    if (found) return found;
    if (Date.now() > deadline) throw new Error("the command did not appear in the history");
    await sleep(300);
  }
}

beforeAll(async () => {
  requireRoot();
  await requireImage();
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
      res.writeHead(200).end("ok");
    });
  });
  await new Promise<void>((resolve) => receiver?.listen(0, "127.0.0.1", resolve));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  agent = await startAgentProcess({ rootDir: IMAGES_ROOT, env: { AGENT_METRICS_INTERVAL_MS: "300" } });
  dataDir = await mkdtemp(join(tmpdir(), "wrenn-cmd-history-"));
  edge = await startEdgeForAgent(agent, { adminKey, encryptionKey, env: { ...edgeEnv, WRENN_DATA_DIR: dataDir } });
  key = await newTeamKey(edge, adminKey, "history", `history-${randomBytes(3).toString("hex")}`);
}, 180_000);

afterAll(async () => {
  await edge?.close().catch(() => {});
  await agent?.stop().catch(() => {});
  receiver?.closeAllConnections();
  await new Promise<void>((resolve) => (receiver ? receiver.close(() => resolve()) : resolve()));
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
}, 120_000);

describe("command history", () => {
  let sandboxId = "";

  beforeAll(async () => {
    const created = await call("POST", "/v1/sandboxes", { template: TEMPLATE, timeoutSec: 600 });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    sandboxId = (created.body as { id: string }).id;
  }, 120_000);

  afterAll(async () => {
    if (sandboxId) await call("DELETE", `/v1/sandboxes/${sandboxId}`).catch(() => {});
  });

  it("records commands run through the API with exit code, output and sizes; a large output as head + tail", async () => {
    const small = await call("POST", `/v1/sandboxes/${sandboxId}/exec`, {
      cmd: "echo zebra quokka marmalade; echo broken-pipe-ish >&2; exit 3",
    });
    expect(small.status).toBe(200);
    // `seq 1 40000` writes 228,894 bytes: more than head and tail together.
    const large = await call("POST", `/v1/sandboxes/${sandboxId}/exec`, { cmd: "seq 1 40000" });
    expect(large.status).toBe(200);
    expect((large.body as { stdout: string }).stdout.length).toBe(228_894);

    const first = await waitForCommand(sandboxId, (c) => c.commandLine.includes("zebra quokka"));
    expect(first.exitCode).toBe(3);
    expect(first.stdout).toEqual({ head: "zebra quokka marmalade\n", tail: "", bytes: 23 });
    expect(first.stderr).toEqual({ head: "broken-pipe-ish\n", tail: "", bytes: 16 });
    expect(first.commandLine).toBe("/bin/bash -l -c echo zebra quokka marmalade; echo broken-pipe-ish >&2; exit 3");

    const big = await waitForCommand(sandboxId, (c) => c.commandLine.endsWith("seq 1 40000"));
    expect(big.exitCode).toBe(0);
    expect(big.stdout.bytes).toBe(228_894);
    const whole = Array.from({ length: 40_000 }, (_, i) => `${i + 1}\n`).join("");
    expect(big.stdout.head).toBe(whole.slice(0, 65_536));
    expect(big.stdout.tail).toBe(whole.slice(whole.length - 65_536));
    expect(big.stderr.bytes).toBe(0);
  });

  it("finds a command team-wide by a word of its output", async () => {
    const found = await call("GET", "/v1/commands?q=quokka");
    expect(found.status).toBe(200);
    const hits = (found.body as { commands: Command[] }).commands;
    expect(hits.length).toBeGreaterThanOrEqual(1);
    expect(hits[0]?.commandLine).toContain("zebra quokka");
    const none = await call("GET", `/v1/commands?q=${randomBytes(6).toString("hex")}`);
    expect((none.body as { commands: Command[] }).commands).toEqual([]);
    // Another team sees nothing of it.
    if (!edge) throw new Error("edge not started");
    const otherKey = await newTeamKey(edge, adminKey, "other", `other-${randomBytes(3).toString("hex")}`);
    const res = await fetch(`${edge.url}/v1/commands?q=quokka`, { headers: { "x-api-key": otherKey } });
    expect(((await res.json()) as { commands: Command[] }).commands).toEqual([]);
    const bad = await call("GET", "/v1/commands?q=");
    expect(bad.status).toBe(400);
  });

  it("delivers a background command's callback after the client left and the sandbox was paused and resumed", async () => {
    const secret = await call("GET", "/v1/webhooks/callback-secret");
    expect(secret.status).toBe(200);
    const started = Date.now();
    const bg = await call("POST", `/v1/sandboxes/${sandboxId}/exec`, {
      cmd: "sleep 4; echo done-sleeping",
      background: true,
      callbackUrl: receiverUrl,
    });
    expect(bg.status, JSON.stringify(bg.body)).toBe(202);
    const { commandId, pid } = bg.body as { commandId: string; pid: number };
    expect(commandId).toMatch(/^cmd_/);
    expect(pid).toBeGreaterThan(0);
    // The answer came at once, not after the command.
    expect(Date.now() - started).toBeLessThan(3_000);
    // Pending in the history while it runs.
    const running = (await historyOf(sandboxId)).find((c) => c.commandId === commandId);
    expect(running).toMatchObject({ endedAt: null, background: true, callbackState: "pending" });

    expect((await call("POST", `/v1/sandboxes/${sandboxId}/pause`, {})).status).toBe(200);
    await sleep(5_000);
    // Paused across the command's whole sleep: no callback can have come.
    expect(received.filter((r) => r.body.includes(commandId))).toEqual([]);
    expect((await call("POST", `/v1/sandboxes/${sandboxId}/resume`, {})).status).toBe(200);

    const deadline = Date.now() + 30_000;
    let hit: Received | undefined;
    while (!hit && Date.now() < deadline) {
      hit = received.find((r) => r.body.includes(commandId));
      if (!hit) await sleep(200);
    }
    if (!hit) throw new Error("no callback arrived within 30 s of the resume");
    const arrivedAt = Date.now();
    const body = JSON.parse(hit.body) as { type: string; data: Record<string, unknown> };
    // From the command's end (guest clock, synced at resume) to the receiver: sampling + poll + delivery loop.
    console.log(`callback latency: ${arrivedAt - Date.parse(String(body.data.endedAt))} ms after the command ended`);
    expect(body.type).toBe("command.finished");
    expect(body.data).toMatchObject({
      commandId,
      sandboxId,
      exitCode: 0,
      stdout: { head: "done-sleeping\n", tail: "", bytes: 14 },
    });
    expect(body.data.durationMs as number).toBeGreaterThanOrEqual(4_000);
    // Signed with the team's callback secret: v1=HMAC-SHA256(secret, "<timestamp>.<body>").
    const ts = String(hit.headers["wrenn-webhook-timestamp"]);
    const expected = createHmac("sha256", (secret.body as { secret: string }).secret)
      .update(`${ts}.${hit.body}`)
      .digest("hex");
    expect(hit.headers["wrenn-webhook-signature"]).toBe(`v1=${expected}`);

    const done = (await historyOf(sandboxId)).find((c) => c.commandId === commandId);
    expect(done).toMatchObject({ exitCode: 0, callbackState: "queued" });
    // Exactly once: later pulls of the same record queue nothing more.
    await sleep(2_500);
    expect(received.filter((r) => r.body.includes(commandId))).toHaveLength(1);
  }, 90_000);

  it("delivers the callback of a command that ended while no edge ran, once a new edge took over", async () => {
    const bg = await call("POST", `/v1/sandboxes/${sandboxId}/exec`, {
      cmd: "sleep 2; echo after-restart",
      background: true,
      callbackUrl: receiverUrl,
    });
    expect(bg.status, JSON.stringify(bg.body)).toBe(202);
    const { commandId } = bg.body as { commandId: string };
    await edge?.close();
    edge = undefined;
    // The command ends while there is no edge at all.
    await sleep(4_000);
    const parsed = parseEnv({
      WRENN_PORT: "0",
      WRENN_HOST: "127.0.0.1",
      WRENN_DATA_DIR: dataDir,
      WRENN_ENCRYPTION_KEY: encryptionKey,
      WRENN_ADMIN_API_KEY: adminKey,
      ...edgeEnv,
    });
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
    edge = await startNodeEdge(parsed.env, noopLogger);
    const deadline = Date.now() + 30_000;
    let hit: Received | undefined;
    while (!hit && Date.now() < deadline) {
      hit = received.find((r) => r.body.includes(commandId));
      if (!hit) await sleep(200);
    }
    if (!hit) throw new Error("no callback arrived within 30 s of the new edge's start");
    const body = JSON.parse(hit.body) as { data: Record<string, unknown> };
    expect(body.data).toMatchObject({
      commandId,
      exitCode: 0,
      stdout: { head: "after-restart\n", tail: "", bytes: 14 },
    });
  }, 90_000);

  it("refuses a callback without background, and a callback URL that is not http(s)", async () => {
    const without = await call("POST", `/v1/sandboxes/${sandboxId}/exec`, { cmd: "true", callbackUrl: receiverUrl });
    expect(without.status).toBe(400);
    const scheme = await call("POST", `/v1/sandboxes/${sandboxId}/exec`, {
      cmd: "true",
      background: true,
      callbackUrl: "file:///etc/passwd",
    });
    expect(scheme.status).toBe(400);
    expect((scheme.body as { error: { code: string } }).error.code).toBe("BAD_REQUEST");
  });

  it("keeps the history after the sandbox ended", async () => {
    const before = await historyOf(sandboxId);
    expect((await call("DELETE", `/v1/sandboxes/${sandboxId}`)).status).toBe(204);
    const after = await historyOf(sandboxId);
    expect(after.length).toBeGreaterThanOrEqual(before.length);
    expect(after.some((c) => c.commandLine.includes("zebra quokka"))).toBe(true);
    // The CLI reads the same history, also of the ended sandbox.
    if (!edge) throw new Error("edge not started");
    const connection = ["--api-url", edge.url, "--api-key", key];
    const table = await runCli(sandboxCommand, ["history", sandboxId, ...connection]);
    expect(table.code, table.err).toBe(0);
    expect(table.out).toContain("zebra quokka");
    const searched = await runCli(sandboxCommand, [
      "history",
      sandboxId,
      "--search",
      "marmalade",
      "--output",
      ...connection,
    ]);
    expect(searched.out).toContain("zebra quokka marmalade");
    expect(searched.out).not.toContain("seq 1 40000");
    const json = await runCli(sandboxCommand, ["history", sandboxId, "--json", "--limit", "2", ...connection]);
    expect((JSON.parse(json.out) as unknown[]).length).toBe(2);
    sandboxId = "";
  });
});
