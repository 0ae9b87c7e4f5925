import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import { fileURLToPath } from "node:url";
import type { Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DatabaseHandle } from "../../edge/db/client.js";
import { sandboxes } from "../../edge/db/schema/index.js";
import { openNodeDatabase } from "../../edge/node/database.js";
import { freePort } from "../helpers/agent-process.js";
import { FakeAgent } from "../helpers/edge-app.js";
import { type PostgresServer, startPostgres } from "../helpers/postgres.js";

/**
 * The edge killed with `kill -9` while a create is in flight (the host made the sandbox, the edge
 * never heard back): a new edge on the same database converges by its reconcile sweep alone, so the
 * database and the host agree (the sandbox either runs and is recorded running, or is gone and is
 * recorded not active), and nothing runs that the database does not know.
 *
 * The host agent is the in-memory fake served over HTTP (a double at the Connect boundary), which
 * lets the test hold the create's answer until the edge is dead.
 */

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const adminKey = `wrn_fault_admin_${randomBytes(16).toString("hex")}`;
const encryptionKey = randomBytes(32).toString("hex");

interface EdgeProcess {
  child: ChildProcess;
  url: string;
  output: () => string;
}

async function startEdge(databaseUrl: string): Promise<EdgeProcess> {
  const port = await freePort();
  const child = spawn(process.execPath, ["--import", "tsx", "edge/node.ts"], {
    cwd: repoRoot,
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      WRENN_PORT: String(port),
      WRENN_HOST: "127.0.0.1",
      WRENN_ENCRYPTION_KEY: encryptionKey,
      WRENN_ADMIN_API_KEY: adminKey,
      WRENN_RECONCILE_INTERVAL_SEC: "1",
      WRENN_RECONCILE_STUCK_SEC: "2",
      WRENN_RECONCILE_ORPHAN_GRACE_SEC: "1",
      WRENN_LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (d: Buffer) => {
    output += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    output += d.toString();
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the edge exited: ${output.slice(-3000)}`);
    const res = await fetch(`${url}/health`).catch(() => undefined);
    const body = (await res?.json().catch(() => undefined)) as { starting?: string[] } | undefined;
    if (res?.status === 200 && !body?.starting) break;
    if (Date.now() > deadline) throw new Error(`the edge did not start: ${output.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return { child, url, output: () => output };
}

function killHard(edge: EdgeProcess | undefined): Promise<void> {
  if (!edge || edge.child.exitCode !== null || edge.child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    edge.child.once("exit", () => resolve());
    edge.child.kill("SIGKILL");
  });
}

describe("the edge killed with kill -9 during a create", () => {
  let pg: PostgresServer | undefined;
  let database: DatabaseHandle | undefined;
  let agentServer: Server | undefined;
  let agent: FakeAgent | undefined;
  let first: EdgeProcess | undefined;
  let second: EdgeProcess | undefined;
  /** Set while a create is being held; resolves the test's wait. */
  let createArrived: () => void = () => {};
  const holdCreates = { on: true };

  beforeAll(async () => {
    pg = await startPostgres();
    const token = `host-token-${randomBytes(12).toString("hex")}`;
    const port = await freePort();
    agent = new FakeAgent(`http://127.0.0.1:${port}`, token);
    // The create reaches the fake (the sandbox exists there) and its answer never comes back.
    const hold: Interceptor = (next) => async (req) => {
      const res = await next(req);
      if (req.method.name === "CreateSandbox" && holdCreates.on) {
        createArrived();
        await new Promise<never>(() => {});
      }
      return res;
    };
    const fake = agent;
    agentServer = createServer(connectNodeAdapter({ routes: fake.routes, interceptors: [hold] }));
    await new Promise<void>((resolve) => agentServer?.listen(port, "127.0.0.1", () => resolve()));
    database = await openNodeDatabase({ databaseUrl: pg.url });
  }, 120_000);

  afterAll(async () => {
    await killHard(first);
    await killHard(second);
    agentServer?.closeAllConnections();
    await new Promise<void>((resolve) => (agentServer ? agentServer.close(() => resolve()) : resolve()));
    await database?.close().catch(() => {});
    await pg?.stop();
  });

  it("converges at the next sweep of a new edge: database and host agree", async () => {
    if (!pg || !agent || !database) throw new Error("not set up");
    first = await startEdge(pg.url);
    const admin = { "x-api-key": adminKey, "content-type": "application/json" };
    const host = await fetch(`${first.url}/v1/hosts`, {
      method: "POST",
      headers: admin,
      body: JSON.stringify({ address: agent.address, token: agent.token }),
    });
    expect(host.status, await host.clone().text()).toBe(201);
    const arrived = new Promise<void>((resolve) => {
      createArrived = resolve;
    });
    const pending = fetch(`${first.url}/v1/sandboxes`, {
      method: "POST",
      headers: admin,
      body: JSON.stringify({ template: "minimal", timeoutSec: 600 }),
    }).catch(() => undefined);
    await arrived;
    await killHard(first);
    expect(await pending).toBeUndefined();
    holdCreates.on = false;

    // The host has the sandbox; the database has a row the dead edge never finished.
    const [onHost] = [...agent.sandboxes.keys()];
    expect(onHost).toBeDefined();
    const [before] = await database.db
      .select()
      .from(sandboxes)
      .where(eq(sandboxes.id, onHost ?? ""));
    expect(before?.state).not.toBe("running");

    second = await startEdge(pg.url);
    const activeStates = new Set(["pending", "starting", "running", "pausing", "resuming", "paused"]);
    const deadline = Date.now() + 60_000;
    let last = "";
    for (;;) {
      const rows = await database.db.select().from(sandboxes);
      const agentIds = new Set(agent.sandboxes.keys());
      const settled = rows.every((row) =>
        agentIds.has(row.id) ? row.state === "running" : !activeStates.has(row.state),
      );
      const known = [...agentIds].every((id) => rows.some((row) => row.id === id && row.state === "running"));
      last = JSON.stringify({ rows: rows.map((r) => [r.id, r.state]), agent: [...agentIds] });
      if (settled && known && rows.length === 1) break;
      if (Date.now() > deadline)
        throw new Error(`no convergence within 60 s: ${last}\n${second.output().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(second.child.exitCode).toBeNull();
  }, 240_000);
});
