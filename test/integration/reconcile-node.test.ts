import { eq } from "drizzle-orm";
import { afterAll, describe, expect, it } from "vitest";
import { sandboxes, teams } from "../../edge/db/schema/index.js";
import { parseEnv } from "../../edge/env.js";
import { noopLogger } from "../../edge/logger.js";
import { type NodeEdge, startNodeEdge } from "../../edge/node.js";
import { newSandboxId } from "../../edge/services/ids.js";
import { type ScriptedAgent, startScriptedAgent } from "../helpers/reconcile-scripted-agent.js";

/** The Node edge runs the sweep on its own every WRENN_RECONCILE_INTERVAL_SEC seconds. */

let edge: NodeEdge | undefined;
let agent: ScriptedAgent | undefined;
const adminKey = "wrn_reconcile_node_admin_key_0123456789";

afterAll(async () => {
  await edge?.close();
  await agent?.stop();
});

describe("reconcile interval on Node", () => {
  it("converges a row without anyone calling the sweep", async () => {
    const parsed = parseEnv({
      WRENN_PORT: "0",
      WRENN_HOST: "127.0.0.1",
      WRENN_DATA_DIR: "memory://",
      WRENN_ENCRYPTION_KEY: "ab".repeat(32),
      WRENN_ADMIN_API_KEY: adminKey,
      WRENN_RECONCILE_INTERVAL_SEC: "1",
    });
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
    edge = await startNodeEdge(parsed.env, noopLogger);
    agent = await startScriptedAgent();
    const res = await fetch(`${edge.url}/v1/hosts`, {
      method: "POST",
      headers: { "x-api-key": adminKey, "content-type": "application/json" },
      body: JSON.stringify({ address: agent.url, token: agent.token }),
    });
    expect(res.status).toBe(201);
    const hostId = ((await res.json()) as { id: string }).id;
    const db = edge.database.db;
    const [team] = await db.select().from(teams).limit(1);
    const id = newSandboxId();
    await db.insert(sandboxes).values({
      id,
      teamId: team?.id ?? "",
      hostId,
      template: "minimal",
      state: "running",
      vcpus: 1,
      memoryMb: 256,
      timeoutSec: 0,
      envdTokenSealed: "unused",
    });
    const deadline = Date.now() + 10_000;
    let state = "running";
    while (Date.now() < deadline && state === "running") {
      await new Promise((r) => setTimeout(r, 200));
      const [row] = await db.select().from(sandboxes).where(eq(sandboxes.id, id));
      state = row?.state ?? "gone";
    }
    expect(state).toBe("stopped");
    expect(agent.calls).toContain("listSandboxes");
  });
});
