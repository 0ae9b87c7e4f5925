import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SandboxState } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { IMAGES_ROOT, newSandboxId, QEMU_AGENT_ENV, qemuAgentSkipReason, sh } from "../helpers/qemu-helpers.js";

/**
 * Issue 17, snapshots on QEMU (TCG here, so one snapshot → create cycle): the snapshot keeps memory, so
 * a process started in the source runs on in the sandbox created from it, which gets its own id, slot
 * and envd token; the source resumes after the snapshot; the snapshot outlives the source; a sandbox
 * from it does not see the source's later writes.
 */

const skipReason = qemuAgentSkipReason();

describe.skipIf(skipReason !== undefined)(
  `QEMU snapshots keep memory${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    let agent: AgentProcess | undefined;

    beforeAll(async () => {
      agent = await startAgentProcess({ runtime: "qemu", rootDir: IMAGES_ROOT, env: QEMU_AGENT_ENV });
    });
    afterAll(async () => {
      await agent?.stop();
    });

    it("resumes the source's processes in a new sandbox; the source runs on; the snapshot outlives it", async () => {
      if (!agent) throw new Error("agent did not start");
      const { client } = agent;
      const source = newSandboxId();
      await client.createSandbox({
        sandboxId: source,
        template: "minimal",
        vcpus: 1,
        memoryMb: 256,
        envdAccessToken: "source-token",
      });
      await sh(
        client,
        source,
        // The counter replaces its file by rename: a read never meets it truncated and empty.
        "echo kept > /home/user/kept.txt; setsid -f bash -c 'i=0; while :; do i=$((i+1)); echo $i > /home/user/count.new; mv /home/user/count.new /home/user/count; sleep 0.2; done' </dev/null >/dev/null 2>&1",
      );
      await new Promise((r) => setTimeout(r, 1000));

      const snapshotId = `vm-${source.slice(0, 8)}`;
      let t = performance.now();
      const { snapshot, sandbox } = await client.createSnapshot({ sandboxId: source, snapshotId });
      const snapshotMs = performance.now() - t;
      expect(snapshot).toMatchObject({ snapshotId, keepsMemory: true, vcpus: 1, memoryMb: 256 });
      expect(sandbox?.state).toBe(SandboxState.RUNNING);
      expect((await client.getHostInfo({})).snapshotsKeepMemory).toBe(true);
      // The source runs on after the snapshot; what it writes now is not in the snapshot.
      await sh(client, source, "echo later > /home/user/later.txt");

      const copy = newSandboxId();
      t = performance.now();
      await client.createSandbox({ sandboxId: copy, template: "minimal", snapshotId, envdAccessToken: "copy-token" });
      const createMs = performance.now() - t;
      console.info(`qemu (TCG): snapshot ${Math.round(snapshotMs)} ms, create from it ${Math.round(createMs)} ms`);
      // The counting process came along and goes on counting.
      const first = Number((await sh(client, copy, "cat /home/user/count")).trim());
      await new Promise((r) => setTimeout(r, 1500));
      const later = Number((await sh(client, copy, "cat /home/user/count")).trim());
      expect(first).toBeGreaterThan(0);
      expect(later).toBeGreaterThan(first);
      expect(
        (await sh(client, copy, "cat /home/user/kept.txt; test -e /home/user/later.txt || echo no-later")).trim(),
      ).toBe("kept\nno-later");
      expect((await client.getSandbox({ sandboxId: copy })).sandbox?.state).toBe(SandboxState.RUNNING);

      // The snapshot outlives its source; deleting it while the copy runs keeps the copy working.
      await client.destroySandbox({ sandboxId: source });
      const dir = join(agent.stateDir, "snapshots", `saved-${snapshotId}`);
      await client.deleteSnapshot({ snapshotId });
      expect(existsSync(dir)).toBe(true);
      expect((await sh(client, copy, "cat /home/user/kept.txt")).trim()).toBe("kept");
      await client.destroySandbox({ sandboxId: copy });
      expect(existsSync(dir)).toBe(false);
    });
  },
);
