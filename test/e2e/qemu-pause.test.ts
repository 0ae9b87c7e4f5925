import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir, stat, truncate } from "node:fs/promises";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { filesLayout } from "../../agent/layout.js";
import { SandboxState } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { IMAGES_ROOT, newSandboxId, QEMU_AGENT_ENV, qemuAgentSkipReason, sh } from "../helpers/qemu-helpers.js";

/**
 * Issue 6 acceptance for QEMU (TCG here): pause to disk and resume through a real agent. A
 * background process keeps counting across pauses; ten pause/resume cycles leave the home tree
 * byte-identical; the guest clock is right after a resume; a paused sandbox cannot be paused again;
 * a corrupt snapshot fails the resume clearly and keeps the disk.
 */

const skipReason = qemuAgentSkipReason();

/** Lines of the counter file as numbers; checks they are exactly 1..n with nothing missing or repeated. */
function counterLines(text: string): number[] {
  const lines = text.split("\n").filter((l) => l.length > 0);
  const numbers = lines.map(Number);
  numbers.forEach((n, i) => {
    if (n !== i + 1) throw new Error(`counter line ${i + 1} is "${lines[i]}", expected ${i + 1}`);
  });
  return numbers;
}

const HOME_HASH =
  "cd /home/user && find . -type f ! -name counter.txt -print0 | sort -z | xargs -0 -r sha256sum | sha256sum | cut -d' ' -f1";

describe.skipIf(skipReason !== undefined)(
  `QEMU pause to disk and resume${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    let agent: AgentProcess | undefined;
    const sandboxId = newSandboxId();

    beforeAll(async () => {
      agent = await startAgentProcess({ runtime: "qemu", rootDir: IMAGES_ROOT, env: QEMU_AGENT_ENV });
      await agent.client.createSandbox({ sandboxId, template: "minimal", vcpus: 1, memoryMb: 256 });
    });
    afterAll(async () => {
      await agent?.stop();
    });

    it("keeps a background process running and its file whole across a pause", async () => {
      if (!agent) throw new Error("agent did not start");
      const { client } = agent;
      await sh(
        client,
        sandboxId,
        "setsid -f bash -c 'i=0; while :; do i=$((i+1)); echo $i >> /home/user/counter.txt; sleep 0.1; done' </dev/null >/dev/null 2>&1",
      );
      await new Promise((r) => setTimeout(r, 1500));
      const beforePause = counterLines(await sh(client, sandboxId, "cat /home/user/counter.txt"));
      expect(beforePause.length).toBeGreaterThan(3);

      const paused = await client.pauseSandbox({ sandboxId });
      expect(paused.sandbox?.state).toBe(SandboxState.PAUSED);
      const files = Object.fromEntries((paused.sandbox?.snapshotFiles ?? []).map((f) => [f.name, Number(f.sizeBytes)]));
      expect(files.memory).toBeGreaterThan(1_000_000);
      expect(files["disk.qcow2"]).toBeGreaterThan(0);

      await new Promise((r) => setTimeout(r, 2000));
      const resumed = await client.resumeSandbox({ sandboxId });
      expect(resumed.sandbox?.state).toBe(SandboxState.RUNNING);

      const afterResume = counterLines(await sh(client, sandboxId, "cat /home/user/counter.txt"));
      // Every line written before the pause is there, in order, and the same process carried on.
      expect(afterResume.slice(0, beforePause.length)).toEqual(beforePause);
      await new Promise((r) => setTimeout(r, 1000));
      const later = counterLines(await sh(client, sandboxId, "cat /home/user/counter.txt"));
      expect(later.length).toBeGreaterThan(afterResume.length);
      expect((await sh(client, sandboxId, "pgrep -c -f 'echo \\$i >> /home/user/counter.txt'")).trim()).toBe("1");
    });

    it("sets the guest clock right after a resume", async () => {
      if (!agent) throw new Error("agent did not start");
      const { client } = agent;
      await client.pauseSandbox({ sandboxId });
      // TCG guests' clocks stand still while paused; 5 s is far beyond the 1 s allowed.
      await new Promise((r) => setTimeout(r, 5000));
      await client.resumeSandbox({ sandboxId });
      const hostBefore = Date.now();
      const guestMs = Number((await sh(client, sandboxId, "date +%s%3N")).trim());
      const hostAfter = Date.now();
      expect(guestMs).toBeGreaterThan(hostBefore - 1000);
      expect(guestMs).toBeLessThan(hostAfter + 1000);
    });

    // Ten cycles of a TCG guest on a shared 2-core host take minutes when other VMs run beside it.
    it("loses nothing over ten pause/resume cycles", { timeout: 900_000 }, async () => {
      if (!agent) throw new Error("agent did not start");
      const { client } = agent;
      for (let cycle = 1; cycle <= 10; cycle++) {
        const t0 = performance.now();
        // New data every cycle, so each snapshot has something of its own to lose.
        await client.writeFile({
          sandboxId,
          path: `/home/user/cycles/file-${cycle}.bin`,
          content: randomBytes(64 * 1024),
        });
        const before = (
          await sh(client, sandboxId, `echo cycle ${cycle} >> /home/user/cycles/log.txt && sync && ${HOME_HASH}`)
        ).trim();
        const t1 = performance.now();
        await client.pauseSandbox({ sandboxId });
        const t2 = performance.now();
        await client.resumeSandbox({ sandboxId });
        const t3 = performance.now();
        const after = (await sh(client, sandboxId, HOME_HASH)).trim();
        expect(after, `home tree after cycle ${cycle}`).toBe(before);
        console.log(
          `cycle ${cycle}: write+hash ${Math.round(t1 - t0)} ms, pause ${Math.round(t2 - t1)} ms, resume ${Math.round(t3 - t2)} ms, hash ${Math.round(performance.now() - t3)} ms`,
        );
      }
      const log = await sh(client, sandboxId, "cat /home/user/cycles/log.txt");
      expect(log.trim().split("\n")).toEqual(Array.from({ length: 10 }, (_, i) => `cycle ${i + 1}`));
      counterLines(await sh(client, sandboxId, "cat /home/user/counter.txt"));
    });

    it("refuses to pause a paused sandbox", async () => {
      if (!agent) throw new Error("agent did not start");
      const { client } = agent;
      await client.pauseSandbox({ sandboxId });
      const err = await client.pauseSandbox({ sandboxId }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.FailedPrecondition);
      await client.resumeSandbox({ sandboxId });
    });

    it("fails a resume from a corrupt snapshot clearly, keeps the disk, and cleans up on destroy", async () => {
      if (!agent) throw new Error("agent did not start");
      const { client } = agent;
      const victim = newSandboxId();
      await client.createSandbox({ sandboxId: victim, template: "minimal", vcpus: 1, memoryMb: 256 });
      await sh(client, victim, "echo precious > /home/user/precious.txt && sync");
      await client.pauseSandbox({ sandboxId: victim });

      const snapshotDir = filesLayout(IMAGES_ROOT, agent.stateDir).snapshotDir(victim);
      const memory = join(snapshotDir, "memory");
      await truncate(memory, Math.floor((await stat(memory)).size / 2));

      const err = await client.resumeSandbox({ sandboxId: victim }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).message).toMatch(/snapshot/i);
      const state = await client.getSandbox({ sandboxId: victim });
      expect(state.sandbox?.state).toBe(SandboxState.ERROR);
      expect(state.sandbox?.error).toMatch(/snapshot/i);
      // The disk with the user's files is kept.
      expect(await readdir(snapshotDir)).toContain("disk.qcow2");

      await client.destroySandbox({ sandboxId: victim });
      expect(existsSync(snapshotDir)).toBe(false);
    });
  },
);
