import { describe, expect, it } from "vitest";
import { noopLogger } from "../../logger.js";
import { startReconcileLoop } from "./loop.js";

describe("startReconcileLoop", () => {
  it("never overlaps sweeps, survives a failing one, and stop() waits for the one in progress", async () => {
    let running = 0;
    let maxRunning = 0;
    let runs = 0;
    let finished = 0;
    const loop = startReconcileLoop({
      intervalMs: 5,
      logger: noopLogger,
      sweep: async () => {
        running++;
        runs++;
        maxRunning = Math.max(maxRunning, running);
        await new Promise((r) => setTimeout(r, 20));
        running--;
        finished++;
        if (runs === 2) throw new Error("a failing sweep");
      },
    });
    while (runs < 4) await new Promise((r) => setTimeout(r, 5));
    await loop.stop();
    expect(maxRunning).toBe(1);
    expect(finished).toBe(runs);
    const after = runs;
    await new Promise((r) => setTimeout(r, 50));
    expect(runs).toBe(after);
  });
});
