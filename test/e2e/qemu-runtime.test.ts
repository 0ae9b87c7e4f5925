import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runtime, SandboxState } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { IMAGES_ROOT, newSandboxId, QEMU_AGENT_ENV, qemuAgentSkipReason, sh } from "../helpers/qemu-helpers.js";

/**
 * Issue 5 acceptance for the qemu runtime: create → exec → files → destroy on a real VM (TCG on
 * machines without KVM), through a real agent process.
 */

const run = promisify(execFile);
const skipReason = qemuAgentSkipReason();

describe.skipIf(skipReason !== undefined)(
  `qemu runtime through the agent${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    let agent: AgentProcess | undefined;
    beforeAll(async () => {
      agent = await startAgentProcess({ runtime: "qemu", rootDir: IMAGES_ROOT, env: QEMU_AGENT_ENV });
    });
    afterAll(async () => {
      await agent?.stop();
    });

    it("reports the qemu runtime with pause to disk", async () => {
      if (!agent) throw new Error("agent did not start");
      const info = await agent.client.getHostInfo({});
      expect(info.runtime).toBe(Runtime.QEMU);
      expect(info.pauseToDisk).toBe(true);
    });

    it("creates a VM, runs commands, moves files, and destroys it leaving no QEMU behind", async () => {
      if (!agent) throw new Error("agent did not start");
      const { client } = agent;
      const sandboxId = newSandboxId();
      const created = await client.createSandbox({ sandboxId, template: "minimal", vcpus: 1, memoryMb: 256 });
      expect(created.sandbox?.state).toBe(SandboxState.RUNNING);
      expect(created.sandbox?.runtime).toBe(Runtime.QEMU);

      try {
        expect(await sh(client, sandboxId, "cat /etc/os-release")).toMatch(/bookworm/);
        expect((await sh(client, sandboxId, "id -un")).trim()).toBe("user");
        // A VM has its own kernel: the guest's differs from the host's.
        const guestKernel = (await sh(client, sandboxId, "uname -r")).trim();
        const hostKernel = (await run("uname", ["-r"])).stdout.trim();
        expect(guestKernel).not.toBe(hostKernel);

        const content = new TextEncoder().encode("hello from the host\n");
        await client.writeFile({ sandboxId, path: "/home/user/hello.txt", content });
        const read = await client.readFile({ sandboxId, path: "/home/user/hello.txt" });
        expect(new TextDecoder().decode(read.content)).toBe("hello from the host\n");
        const expected = createHash("sha256").update(content).digest("hex");
        expect((await sh(client, sandboxId, "sha256sum /home/user/hello.txt")).split(" ")[0]).toBe(expected);
        const listed = await client.listDir({ sandboxId, path: "/home/user", depth: 1 });
        expect(listed.entries.map((e) => e.name)).toContain("hello.txt");
      } finally {
        await client.destroySandbox({ sandboxId });
      }
      const after = await client.getSandbox({ sandboxId }).catch(() => undefined);
      if (after?.sandbox) expect(after.sandbox.state).toBe(SandboxState.STOPPED);
      const { stdout } = await run("ps", ["-eo", "args"]);
      expect(stdout).not.toContain(`wrenn-${sandboxId}`);
    });

    it("keeps the VM running through a kill -9 of the agent, and a restarted agent re-adopts it", async () => {
      if (!agent) throw new Error("agent did not start");
      const sandboxId = newSandboxId();
      await agent.client.createSandbox({ sandboxId, template: "minimal", vcpus: 1, memoryMb: 256 });
      await sh(agent.client, sandboxId, "echo survived > /home/user/marker.txt");
      const qemuBefore = (await run("pgrep", ["-f", `wrenn-${sandboxId}`])).stdout.trim();
      expect(qemuBefore).toMatch(/^[0-9]+$/);

      agent.kill9();
      const restarted = await startAgentProcess(agent.restartOptions);
      try {
        const listed = await restarted.client.listSandboxes({});
        expect(listed.sandboxes.map((s) => s.sandboxId)).toContain(sandboxId);
        // The same QEMU process, untouched by the agent's death, still serves the guest.
        expect((await run("pgrep", ["-f", `wrenn-${sandboxId}`])).stdout.trim()).toBe(qemuBefore);
        expect((await sh(restarted.client, sandboxId, "cat /home/user/marker.txt")).trim()).toBe("survived");
        await restarted.client.destroySandbox({ sandboxId });
      } finally {
        await restarted.stop();
      }
      const left = await run("pgrep", ["-f", `wrenn-${sandboxId}`]).catch(() => ({ stdout: "" }));
      expect(left.stdout.trim()).toBe("");
    });
  },
);
