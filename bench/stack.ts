import { randomBytes } from "node:crypto";
import { parseEnv } from "../edge/env.js";
import { noopLogger } from "../edge/logger.js";
import { type NodeEdge, startNodeEdge } from "../edge/node.js";
import { IMAGES_ROOT } from "../test/helpers/agent-fixtures.js";
import { type AgentProcess, type AgentProcessOptions, startAgentProcess } from "../test/helpers/agent-process.js";

/**
 * The real stack the end-to-end benches measure through: a real agent process (guest images from
 * IMAGES_ROOT; needs root) and the edge on Node in this process (PGlite in memory), the agent
 * registered as a host under a fresh admin key.
 */
export interface BenchStack {
  agent: AgentProcess;
  edge: NodeEdge;
  adminKey: string;
  /** Connection options for the official e2b SDKs: API and sandbox traffic both go through the edge. */
  sdkOptions: { apiKey: string; apiUrl: string; sandboxUrl: string };
  /** Stops the edge, then the agent (and with it every sandbox still on it). */
  close(): Promise<void>;
}

export interface BenchStackOptions {
  /** How the agent starts (its images root is IMAGES_ROOT). */
  agent: Omit<AgentProcessOptions, "rootDir">;
  /** Seconds between reconcile sweeps; 0 (default): none, so no sweep runs while a bench measures. */
  reconcileIntervalSec?: number;
}

export async function startBenchStack(options: BenchStackOptions): Promise<BenchStack> {
  const adminKey = `wrn_bench_admin_${randomBytes(16).toString("hex")}`;
  const parsed = parseEnv({
    WRENN_PORT: "0",
    WRENN_HOST: "127.0.0.1",
    WRENN_DATA_DIR: "memory://",
    WRENN_ADMIN_API_KEY: adminKey,
    WRENN_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
    WRENN_RECONCILE_INTERVAL_SEC: String(options.reconcileIntervalSec ?? 0),
  });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  const agent = await startAgentProcess({ ...options.agent, rootDir: IMAGES_ROOT });
  let edge: NodeEdge | undefined;
  const close = async () => {
    await edge?.close().catch(() => {});
    await agent.stop().catch(() => {});
  };
  try {
    edge = await startNodeEdge(parsed.env, noopLogger);
    const registered = await fetch(`${edge.url}/v1/hosts`, {
      method: "POST",
      headers: { "x-api-key": adminKey, "content-type": "application/json" },
      body: JSON.stringify({ address: agent.url, token: agent.token }),
    });
    if (registered.status !== 201) {
      throw new Error(`registering the agent: ${registered.status} ${await registered.text()}`);
    }
    const sdkOptions = { apiKey: adminKey, apiUrl: edge.url, sandboxUrl: edge.url };
    return { agent, edge, adminKey, sdkOptions, close };
  } catch (err) {
    await close();
    throw err;
  }
}
