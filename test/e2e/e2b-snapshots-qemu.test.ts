import { randomBytes } from "node:crypto";
import { Sandbox } from "e2b";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NodeEdge } from "../../edge/node.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { newTeamKey, pointE2bSdkAt, sdkTestLogger, startEdgeForAgent } from "../helpers/edge-stack.js";
import { IMAGES_ROOT, QEMU_AGENT_ENV, qemuAgentSkipReason } from "../helpers/qemu-helpers.js";

/**
 * Issue 17's memory-keeping case with the official `e2b` SDK: on a QEMU host (TCG here) a snapshot
 * keeps memory, so a process started in the source keeps running in a sandbox created from the
 * snapshot and in a fork, while the source runs on. Slow under TCG (each boot or resume takes
 * seconds to minutes), hence the e2e project.
 */

const skipReason = qemuAgentSkipReason();
const adminKey = `wrn_e2b_admin_${randomBytes(16).toString("hex")}`;

describe.skipIf(skipReason !== undefined)(
  `e2b SDK snapshots on QEMU keep running processes${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    let agent: AgentProcess | undefined;
    let edge: NodeEdge | undefined;
    let restoreEnv: (() => void) | undefined;
    let apiKey = "";
    const made: Sandbox[] = [];

    beforeAll(async () => {
      agent = await startAgentProcess({ runtime: "qemu", rootDir: IMAGES_ROOT, env: QEMU_AGENT_ENV });
      edge = await startEdgeForAgent(agent, {
        adminKey,
        env: { WRENN_RECONCILE_INTERVAL_SEC: "0" },
        logger: sdkTestLogger(),
      });
      apiKey = await newTeamKey(edge, adminKey, "e2b-qemu-snap", `e2b-qemu-snap-${randomBytes(3).toString("hex")}`);
      restoreEnv = pointE2bSdkAt(edge, apiKey);
    }, 300_000);

    afterAll(async () => {
      for (const sbx of made) await sbx.kill().catch(() => {});
      restoreEnv?.();
      await edge?.close().catch(() => {});
      await agent?.stop().catch(() => {});
    }, 300_000);

    const count = async (sbx: Sandbox) => Number((await sbx.commands.run("cat /home/user/count")).stdout.trim());

    it("createSnapshot → Sandbox.create(snapshotId) and fork resume the source's counting process", async () => {
      const source = await Sandbox.create({ timeoutMs: 900_000 });
      made.push(source);
      await source.files.write("/home/user/kept.txt", "kept");
      await source.commands.run(
        "setsid -f bash -c 'i=0; while :; do i=$((i+1)); echo $i > /home/user/count; sleep 0.2; done' </dev/null >/dev/null 2>&1",
      );
      await new Promise((r) => setTimeout(r, 1000));

      let t = performance.now();
      const snap = await source.createSnapshot();
      const snapshotMs = performance.now() - t;
      const res = await fetch(`${edge?.url}/v1/snapshots/${snap.snapshotId}`, { headers: { "x-api-key": apiKey } });
      expect(await res.json()).toMatchObject({ runtime: "qemu", keepsMemory: true, vcpus: 2, memoryMb: 512 });
      // The source runs on.
      const sourceCount = await count(source);
      expect(sourceCount).toBeGreaterThan(0);

      t = performance.now();
      const copy = await Sandbox.create(snap.snapshotId, { timeoutMs: 900_000 });
      const createMs = performance.now() - t;
      made.push(copy);
      console.info(
        `qemu (TCG) via the edge: snapshot ${Math.round(snapshotMs)} ms, create from it ${Math.round(createMs)} ms`,
      );
      expect(await copy.files.read("/home/user/kept.txt")).toBe("kept");
      const first = await count(copy);
      await new Promise((r) => setTimeout(r, 1500));
      expect(await count(copy)).toBeGreaterThan(first);

      const [fork] = await source.fork({ count: 1, timeoutMs: 900_000 });
      if (!(fork instanceof Sandbox)) throw fork ?? new Error("no fork");
      made.push(fork);
      const forkFirst = await count(fork);
      await new Promise((r) => setTimeout(r, 1500));
      expect(await count(fork)).toBeGreaterThan(forkFirst);
      await fork.files.write("/home/user/kept.txt", "fork");
      expect(await copy.files.read("/home/user/kept.txt")).toBe("kept");
      expect(await source.files.read("/home/user/kept.txt")).toBe("kept");

      expect(await Sandbox.deleteSnapshot(snap.snapshotId)).toBe(true);
      expect(await copy.files.read("/home/user/kept.txt")).toBe("kept");
    });
  },
);
