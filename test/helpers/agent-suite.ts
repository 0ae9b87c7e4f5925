import { type Code, ConnectError } from "@connectrpc/connect";
import { afterAll, afterEach } from "vitest";
import { IMAGES_ROOT, requireImage, requireRoot } from "./agent-fixtures.js";
import { type AgentProcess, type AgentProcessOptions, startAgentProcess } from "./agent-process.js";

/**
 * The shape most agent integration files share: one real agent for a describe block, started once
 * root and the guest image are there, its sandboxes destroyed after each test and the agent stopped
 * at the end. Kept apart from agent-fixtures.ts, which the benches import: this file registers
 * vitest hooks.
 */

/** Starts the suite's agent on the shared images (`rootDir` defaults to IMAGES_ROOT); fails without root or image. */
export async function startSuiteAgent(options: AgentProcessOptions): Promise<AgentProcess> {
  requireRoot();
  await requireImage();
  return startAgentProcess({ rootDir: IMAGES_ROOT, ...options });
}

/**
 * Registers, in the calling describe block, the clean-up for the agent `current()` returns (a getter, as
 * a test may restart it): every sandbox destroyed after each test, the agent stopped after all.
 */
export function cleanUpSuiteAgent(current: () => AgentProcess | undefined): void {
  afterEach(async () => {
    // A failed test must not leave its sandboxes to the next one.
    const agent = current();
    if (!agent) return;
    const { sandboxes } = await agent.client.listSandboxes({});
    await Promise.allSettled(sandboxes.map((s) => agent.client.destroySandbox({ sandboxId: s.sandboxId })));
  });
  afterAll(async () => {
    await current()?.stop();
  });
}

/** The Connect code a call ends with, or "ok". */
export async function codeOf(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}
