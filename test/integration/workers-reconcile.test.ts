import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hosts, sandboxes } from "../../edge/db/schema/index.js";
import { IMAGES_ROOT, requireImage, requireRoot, TEMPLATE } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { type ScriptedAgent, startScriptedAgent } from "../helpers/reconcile-scripted-agent.js";
import { startWorkersStack, type WorkersStack } from "../helpers/workers-stack.js";

/**
 * The edge in the real Workers runtime (workerd, through wrangler's unstable_startWorker) on a real
 * PostgreSQL server reached through the Neon serverless driver and a WebSocket→TCP proxy. A sandbox
 * is created through the Worker, destroyed behind its back on the agent, and the cron trigger
 * (`/__scheduled`) must record it `stopped`.
 */

let stack: WorkersStack | undefined;

beforeAll(async () => {
  stack = await startWorkersStack({ testScheduled: true });
});

afterAll(async () => {
  await stack?.close();
});

async function call(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  if (!stack) throw new Error("worker not started");
  const { status, json } = await stack.call(stack.adminKey, method, path, body);
  return { status, json };
}

async function triggerCron(): Promise<void> {
  if (!stack) throw new Error("worker not started");
  const res = await stack.worker.fetch("http://edge.test/__scheduled?cron=*+*+*+*+*");
  expect(res.status).toBe(200);
  await res.text();
}

async function stateOf(id: string): Promise<{ state: string; stopReason: string | null } | undefined> {
  if (!stack) throw new Error("no database");
  const [row] = await stack.database.db
    .select({ state: sandboxes.state, stopReason: sandboxes.stopReason })
    .from(sandboxes)
    .where(eq(sandboxes.id, id));
  return row;
}

/** Registers an agent through the Worker, creates a sandbox through it, and returns the ids. */
async function createThroughWorker(
  address: string,
  token: string,
  template: string,
): Promise<{ hostId: string; id: string }> {
  const host = await call("POST", "/v1/hosts", { address, token });
  expect(host.status, JSON.stringify(host.json)).toBe(201);
  const created = await call("POST", "/v1/sandboxes", { template, timeoutSec: 600 });
  expect(created.status, JSON.stringify(created.json)).toBe(201);
  const sandbox = created.json as { id: string; state: string; hostId: string };
  expect(sandbox.state).toBe("running");
  return { hostId: sandbox.hostId, id: sandbox.id };
}

async function removeHost(hostId: string): Promise<void> {
  await stack?.database.db.delete(sandboxes).where(eq(sandboxes.hostId, hostId));
  await stack?.database.db.delete(hosts).where(eq(hosts.id, hostId));
}

describe("the Worker on workerd + Neon driver + PostgreSQL", () => {
  it("installs WRENN_ADMIN_API_KEY and reaches PostgreSQL through the Neon driver", async () => {
    const list = await call("GET", "/v1/hosts");
    expect(list.status).toBe(200);
    expect(stack?.proxy.opened()).toBeGreaterThan(0);
  });

  it("cron sweep: a sandbox destroyed behind the Worker's back becomes stopped (scripted agent)", async () => {
    let agent: ScriptedAgent | undefined;
    let hostId: string | undefined;
    try {
      agent = await startScriptedAgent();
      const created = await createThroughWorker(agent.url, agent.token, "minimal");
      hostId = created.hostId;
      agent.sandboxes.delete(created.id);
      await triggerCron();
      expect(await stateOf(created.id)).toEqual({ state: "stopped", stopReason: "lost" });
      expect(agent.calls).toContain("listSandboxes");
      // The cron's Pool is closed in waitUntil: the proxy sees every connection go away.
      const deadline = Date.now() + 5_000;
      while (Date.now() < deadline && (stack?.proxy.open() ?? 0) > 0) await new Promise((r) => setTimeout(r, 50));
      expect(stack?.proxy.open()).toBe(0);
    } finally {
      if (hostId) await removeHost(hostId);
      await agent?.stop();
    }
  });

  it("cron sweep: the same against the real agent (namespace runtime)", async () => {
    requireRoot();
    await requireImage();
    let agent: AgentProcess | undefined;
    let hostId: string | undefined;
    try {
      agent = await startAgentProcess({ runtime: "namespace", rootDir: IMAGES_ROOT });
      const created = await createThroughWorker(agent.url, agent.token, TEMPLATE);
      hostId = created.hostId;
      await agent.client.destroySandbox({ sandboxId: created.id });
      await triggerCron();
      expect(await stateOf(created.id)).toEqual({ state: "stopped", stopReason: "lost" });
    } finally {
      if (hostId) await removeHost(hostId);
      await agent?.stop();
    }
  });
});
