import { describe, expect, it } from "vitest";
import { loadOptionsFromEnv, type MixedLoadResult, opKinds, runMixedLoad } from "../../bench/load-driver.js";
import { requireImage, requireRoot } from "../helpers/agent-fixtures.js";

/**
 * The short form of `npm run bench -- load` (bench/load-driver.ts, the same code): 15 s of mixed
 * traffic from 6 clients on a real stack (edge and agent as their own processes, PostgreSQL, gVisor
 * unless WRENN_LOAD_RUNTIME says otherwise) while a hostile guest answers garbage through the proxy.
 * Nothing may crash, no normal request may get a 5xx, and no row may be lost or left behind.
 */

describe("mixed load with a hostile guest", () => {
  it("keeps edge, agent and envd up, answers no unexpected 5xx and loses no row", async () => {
    requireRoot();
    await requireImage();
    const options = loadOptionsFromEnv({ seconds: 15, clients: 6, maxLiveChurn: 2 });
    const result: MixedLoadResult = await runMixedLoad(options);
    const summary = JSON.stringify(
      {
        samples: result.samples,
        crashes: result.crashes,
        lostRows: result.lostRows,
        outcomes: Object.fromEntries(opKinds.map((k) => [k, result.ops[k].outcomes])),
      },
      null,
      1,
    );
    expect(result.crashes, summary).toEqual([]);
    expect(result.unexpected5xx, summary).toBe(0);
    expect(result.lostRows, summary).toEqual([]);
    // The load did happen: every kind ran and succeeded at least once, and the hostile guest was hit.
    for (const kind of opKinds) {
      if (kind === "hostile proxy") continue;
      expect(result.ops[kind].ok, `${kind}: ${summary}`).toBeGreaterThan(0);
    }
    const hostile = result.ops["hostile proxy"];
    expect(hostile.outcomes["502 SANDBOX_BAD_RESPONSE"] ?? 0, summary).toBeGreaterThan(0);
    // Every hostile answer was one the proxy allows (502 in the error shape, a cut body, slowloris's timeout).
    expect(hostile.ok, summary).toBe(hostile.latencies.length);
    expect(result.edgeRawLines, summary).toEqual([]);
  }, 600_000);
});
