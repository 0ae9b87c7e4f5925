import { readdir, realpath } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  IMAGES_ROOT,
  leftovers,
  newSandboxId,
  requireImage,
  requireRoot,
  TEMPLATE,
} from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";

/**
 * The warm pool sized by demand (agent/sandboxes/warm-pool.ts) on a real namespace agent: a burst of
 * creates grows the pool past its idle size of one, the guests it boots are handed to the next
 * creates, and those reach their first exec faster than the creates that find the pool empty.
 */

/** The pool's size as of its latest "warm guest ready" line. */
async function poolSize(agent: AgentProcess): Promise<number> {
  let size = 0;
  for (const line of (await agent.log()).split("\n")) {
    if (!line.includes('"msg":"warm guest ready"')) continue;
    size = (JSON.parse(line) as { size?: number }).size ?? size;
  }
  return size;
}

async function createThenExec(agent: AgentProcess, id: string): Promise<number> {
  const t0 = performance.now();
  await agent.client.createSandbox({ sandboxId: id, template: TEMPLATE, memoryMb: 256 });
  const out = await agent.client.exec({ sandboxId: id, cmd: "/bin/true" });
  expect(out.exitCode).toBe(0);
  return performance.now() - t0;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] as number;

describe("agent: warm pool sized by demand", () => {
  it("grows after a burst of creates and hands its guests to the next creates, faster than a cold create", async () => {
    requireRoot();
    await requireImage();
    const agent = await startAgentProcess({
      runtime: "namespace",
      namespaceOnly: true,
      rootDir: IMAGES_ROOT,
      env: {
        AGENT_WARM_SANDBOXES: "3",
        AGENT_WARM_TEMPLATE: TEMPLATE,
        // Long enough that creates back to back keep the refill waiting: the pool runs dry mid-sequence.
        AGENT_WARM_REFILL_DELAY_MS: "4000",
      },
    });
    const sandboxes = join(agent.stateDir, "sandboxes");
    const waitForPool = async (size: number) => {
      for (let i = 0; i < 1200 && (await poolSize(agent)) < size; i++) await new Promise((r) => setTimeout(r, 100));
      expect(await poolSize(agent)).toBe(size);
    };
    try {
      // Idle: one guest.
      await waitForPool(1);
      // A burst of three creates at once: the pool's target follows them to three.
      const burst = [newSandboxId(), newSandboxId(), newSandboxId()];
      await Promise.all(burst.map((id) => createThenExec(agent, id)));
      await waitForPool(3);
      expect((await readdir(sandboxes)).filter((n) => n.startsWith(".warm-"))).toHaveLength(3 + 1);
      for (const id of burst) await agent.client.destroySandbox({ sandboxId: id });

      // Five creates back to back: three take the pool's guests, the last two find it empty (the refill
      // waits until creates pause for 4 s) and boot cold.
      const ids = Array.from({ length: 5 }, () => newSandboxId());
      const times: number[] = [];
      for (const id of ids) times.push(await createThenExec(agent, id));
      const warm: boolean[] = [];
      for (const id of ids) warm.push((await realpath(join(sandboxes, id))).includes("/.warm-"));
      expect(warm).toEqual([true, true, true, false, false]);
      const warmMedian = median(times.slice(0, 3));
      const coldMedian = median(times.slice(3));
      expect(warmMedian).toBeLessThan(coldMedian);
      console.log(
        `warm pool: create → first exec ${times.map((t) => t.toFixed(0)).join(", ")} ms (warm median ${warmMedian.toFixed(0)}, cold ${coldMedian.toFixed(0)})`,
      );
      for (const id of ids) await agent.client.destroySandbox({ sandboxId: id });
    } finally {
      await agent.stop();
    }
    expect(await leftovers(agent)).toEqual([]);
  });
});
