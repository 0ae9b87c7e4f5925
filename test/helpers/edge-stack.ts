import { randomBytes } from "node:crypto";
import { parseEnv } from "../../edge/env.js";
import { createConsoleLogger, type Logger, noopLogger } from "../../edge/logger.js";
import { type NodeEdge, startNodeEdge } from "../../edge/node.js";
import type { AgentProcess } from "./agent-process.js";

/**
 * A real Node edge in front of a real agent, as the acceptance tests of the official SDKs, the
 * proxy and the hostile-guest battery need it: the edge on loopback with PGlite in memory (or the
 * DATABASE_URL given), the agent registered as its host.
 */

export interface EdgeForAgentOptions {
  adminKey: string;
  /** Default: a fresh random key. */
  encryptionKey?: string;
  /** Further WRENN_* settings (or DATABASE_URL). */
  env?: Record<string, string>;
  /** Default: nothing logged. */
  logger?: Logger;
}

/** Starts the edge and registers `agent` with it; the edge is closed again if registering fails. */
export async function startEdgeForAgent(agent: AgentProcess, options: EdgeForAgentOptions): Promise<NodeEdge> {
  const parsed = parseEnv({
    WRENN_PORT: "0",
    WRENN_HOST: "127.0.0.1",
    WRENN_DATA_DIR: "memory://",
    WRENN_ENCRYPTION_KEY: options.encryptionKey ?? randomBytes(32).toString("hex"),
    WRENN_ADMIN_API_KEY: options.adminKey,
    ...options.env,
  });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  const edge = await startNodeEdge(parsed.env, options.logger ?? noopLogger);
  try {
    const registered = await fetch(`${edge.url}/v1/hosts`, {
      method: "POST",
      headers: { "x-api-key": options.adminKey, "content-type": "application/json" },
      body: JSON.stringify({ address: agent.url, token: agent.token }),
    });
    if (registered.status !== 201) throw new Error(`register host: ${registered.status} ${await registered.text()}`);
    return edge;
  } catch (err) {
    await edge.close().catch(() => {});
    throw err;
  }
}

/** The edge's own errors on the console when E2B_TEST_LOG is set (debugging an SDK test), else nothing. */
export function sdkTestLogger(): Logger {
  return process.env.E2B_TEST_LOG ? createConsoleLogger("error") : noopLogger;
}

/** Mints a key for a new team with the admin key and returns its secret. */
export async function newTeamKey(edge: NodeEdge, adminKey: string, name: string, newTeamName: string): Promise<string> {
  const made = await fetch(`${edge.url}/v1/api-keys`, {
    method: "POST",
    headers: { "x-api-key": adminKey, "content-type": "application/json" },
    body: JSON.stringify({ name, newTeamName }),
  });
  return ((await made.json()) as { secret: string }).secret;
}

/**
 * Points the official SDKs at `edge` the way a user does (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY;
 * the SDK reads them when each call starts) and returns what puts the previous values back.
 */
export function pointE2bSdkAt(edge: NodeEdge, apiKey: string): () => void {
  const saved: Record<string, string | undefined> = {};
  const set = (name: string, value: string) => {
    if (!(name in saved)) saved[name] = process.env[name];
    process.env[name] = value;
  };
  set("E2B_API_URL", edge.url);
  set("E2B_SANDBOX_URL", edge.url);
  set("E2B_API_KEY", apiKey);
  return () => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
}
