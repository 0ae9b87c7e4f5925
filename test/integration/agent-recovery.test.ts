import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { execa } from "execa";
import { beforeAll, describe, expect, it } from "vitest";
import { SandboxState, StopReason, TimeoutAction } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { leftovers, newSandboxId, readState, TEMPLATE, text } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess, suiteRuntime } from "../helpers/agent-process.js";
import { cleanUpSuiteAgent, startSuiteAgent } from "../helpers/agent-suite.js";

/**
 * Issue 5 acceptance: 20 concurrent creates, the TTL reaper (kill and auto-pause, reported until the
 * edge acknowledges them, kept across a restart), and restart recovery after `kill -9` of the agent
 * (sandboxes keep running and are re-adopted; half-made ones are removed).
 */

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await fn();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe("agent: concurrency, TTL reaper, restart recovery", () => {
  let agent: AgentProcess;

  beforeAll(async () => {
    agent = await startSuiteAgent({
      runtime: "namespace",
      env: { AGENT_REAP_INTERVAL_MS: "500" },
    });
  });
  cleanUpSuiteAgent(() => agent);

  it("starts 20 sandboxes at once, all usable, and removes them all", async () => {
    const c = agent.client;
    const ids = Array.from({ length: 20 }, newSandboxId);
    const results = await Promise.allSettled(
      ids.map((sandboxId) => c.createSandbox({ sandboxId, template: TEMPLATE })),
    );
    const failures = results
      .filter((r) => r.status === "rejected")
      .map((r) => String((r as PromiseRejectedResult).reason));
    expect(failures).toEqual([]);
    const outputs = await Promise.all(ids.map((sandboxId) => c.exec({ sandboxId, cmd: "hostname" })));
    expect(outputs.map((o) => text(o.stdout).trim())).toEqual(ids);
    const listed = await c.listSandboxes({});
    expect(listed.sandboxes.filter((s) => ids.includes(s.sandboxId) && s.state === SandboxState.RUNNING)).toHaveLength(
      20,
    );
    const info = await c.getHostInfo({});
    expect(info.load?.sandboxes).toBe(20);
    expect(info.load?.slotsInUse).toBe(20);
    await Promise.all(ids.map((sandboxId) => c.destroySandbox({ sandboxId })));
    expect(await leftovers(agent)).toEqual([]);
  });

  it("reaps expired sandboxes, reports each until acknowledged, and auto-pauses when asked", async () => {
    const c = agent.client;
    const killed = newSandboxId();
    const paused = newSandboxId();
    const lasting = newSandboxId();
    await Promise.all([
      c.createSandbox({ sandboxId: killed, template: TEMPLATE, timeoutSec: 1 }),
      c.createSandbox({ sandboxId: paused, template: TEMPLATE, timeoutSec: 1, timeoutAction: TimeoutAction.PAUSE }),
      c.createSandbox({ sandboxId: lasting, template: TEMPLATE, timeoutSec: 600 }),
    ]);
    const reaps = await waitFor(
      "both expiring sandboxes to be reaped",
      async () => {
        const { reaps } = await c.listSandboxes({});
        const ids = reaps.map((r) => r.sandbox?.sandboxId);
        return ids.includes(killed) && ids.includes(paused) ? reaps : undefined;
      },
      15_000,
    );
    const seen = new Map(reaps.map((r) => [r.sandbox?.sandboxId, r.sandbox?.state]));
    expect(reaps).toHaveLength(2);
    expect(seen.get(killed)).toBe(SandboxState.STOPPED);
    expect(seen.get(paused)).toBe(SandboxState.PAUSED);
    expect(reaps.every((r) => /^reap_[a-z0-9]{16}$/.test(r.reapId) && r.reapedAt !== undefined)).toBe(true);
    // Reported again until the edge says it recorded them; then gone, and a repeated acknowledgement is harmless.
    expect((await c.listSandboxes({})).reaps.map((r) => r.reapId)).toEqual(reaps.map((r) => r.reapId));
    const ids = reaps.map((r) => r.reapId);
    expect((await c.acknowledgeReaped({ reapIds: ids })).removed).toBe(2);
    expect((await c.listSandboxes({})).reaps).toEqual([]);
    expect((await c.acknowledgeReaped({ reapIds: ids })).removed).toBe(0);
    await expect(c.acknowledgeReaped({ reapIds: ["../etc/passwd"] })).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });

    const gone = (await c.getSandbox({ sandboxId: killed })).sandbox;
    expect(gone?.state).toBe(SandboxState.STOPPED);
    expect(gone?.stopReason).toBe(StopReason.TIMEOUT);
    const list = await c.listSandboxes({});
    expect(list.sandboxes.map((s) => s.sandboxId).sort()).toEqual([paused, lasting].sort());

    // Paused time does not count: resuming restarts the clock and the sandbox works again.
    const resumed = await c.resumeSandbox({ sandboxId: paused, timeoutSec: 600 });
    expect(resumed.sandbox?.state).toBe(SandboxState.RUNNING);
    expect(text((await c.exec({ sandboxId: paused, cmd: "echo", args: ["back"] })).stdout)).toBe("back\n");
    await c.destroySandbox({ sandboxId: paused });
    await c.destroySandbox({ sandboxId: lasting });
  });

  it("notices a sandbox whose processes died, cleans it up and reports it lost", async () => {
    const c = agent.client;
    const id = newSandboxId();
    await c.createSandbox({ sandboxId: id, template: TEMPLATE });
    const state = await readState(agent, id);
    const pid = state.handle?.pid ?? 0;
    // Kill everything of the sandbox behind the agent's back (as an OOM or an operator might).
    const unified = state.handle?.data.cgroups?.unified;
    if (unified) await writeFile(`${unified}/cgroup.kill`, "1");
    try {
      process.kill(pid, "SIGKILL");
    } catch (err) {
      // cgroup.kill may already have ended it (the guest's root process lives in the sandbox's cgroups).
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
    }
    const lost = await waitFor(
      "the reaper to report the lost sandbox",
      async () => (await c.listSandboxes({})).reaps.find((r) => r.sandbox?.sandboxId === id),
      15_000,
    );
    expect(lost.sandbox?.state).toBe(SandboxState.STOPPED);
    expect(lost.sandbox?.stopReason).toBe(StopReason.LOST);
    await c.acknowledgeReaped({ reapIds: [lost.reapId] });
    expect((await c.listSandboxes({})).sandboxes.map((s) => s.sandboxId)).not.toContain(id);
    expect(await leftovers(agent, [pid])).toEqual([]);
  });

  it("keeps unacknowledged reaps through kill -9 of the agent, without the sandbox's secrets", async () => {
    const id = newSandboxId();
    await agent.client.createSandbox({
      sandboxId: id,
      template: TEMPLATE,
      timeoutSec: 1,
      envdAccessToken: "secret-envd-token",
      envVars: { SECRET_VAR: "secret-value" },
    });
    const reap = await waitFor(
      "the reaper to kill the expiring sandbox",
      async () => (await agent.client.listSandboxes({})).reaps.find((r) => r.sandbox?.sandboxId === id),
      15_000,
    );
    const onDisk = await readFile(join(agent.stateDir, "reaps.json"), "utf8");
    expect(onDisk).toContain(reap.reapId);
    expect(onDisk).not.toContain("secret-envd-token");
    expect(onDisk).not.toContain("secret-value");

    const first = agent;
    first.kill9();
    agent = await startAgentProcess(first.restartOptions);
    const after = (await agent.client.listSandboxes({})).reaps;
    expect(after.map((r) => [r.reapId, r.sandbox?.sandboxId, r.sandbox?.state, r.sandbox?.stopReason])).toEqual([
      [reap.reapId, id, SandboxState.STOPPED, StopReason.TIMEOUT],
    ]);
    expect((await agent.client.acknowledgeReaped({ reapIds: [reap.reapId] })).removed).toBe(1);
    expect((await agent.client.listSandboxes({})).reaps).toEqual([]);
  });

  it("keeps sandboxes running through kill -9 of the agent; a restarted agent re-adopts them and removes half-made ones", async () => {
    const first = agent;
    const ids = [newSandboxId(), newSandboxId()];
    await Promise.all(
      ids.map((sandboxId) => first.client.createSandbox({ sandboxId, template: TEMPLATE, timeoutSec: 600 })),
    );
    await first.client.writeFile({
      sandboxId: ids[0] ?? "",
      path: "/home/user/kept.txt",
      content: new TextEncoder().encode("kept"),
    });
    const pids = await Promise.all(ids.map(async (id) => (await readState(first, id)).handle?.pid ?? 0));

    first.kill9();
    await new Promise((r) => setTimeout(r, 300));
    for (const pid of pids) expect(() => process.kill(pid, 0)).not.toThrow();

    // Something a crashed create could leave: a state file still "starting" and its slot's netns.
    const halfMade = newSandboxId();
    const halfDir = join(first.stateDir, "sandboxes", halfMade);
    await mkdir(halfDir, { recursive: true });
    await writeFile(
      join(halfDir, "state.json"),
      JSON.stringify({
        id: halfMade,
        template: TEMPLATE,
        status: "starting",
        slot: { index: 100, kind: "namespace", egress: false },
      }),
    );
    await execa("ip", ["netns", "add", `${first.netPrefix}-100`]);
    // A sandbox whose resume failed earlier: in error, its disk kept for inspection until destroyed.
    const failed = newSandboxId();
    await mkdir(join(first.stateDir, "sandboxes", failed, "upper"), { recursive: true });
    await writeFile(
      join(first.stateDir, "sandboxes", failed, "state.json"),
      JSON.stringify({
        id: failed,
        template: TEMPLATE,
        runtime: suiteRuntime(),
        status: "error",
        error: "resume failed: test",
        vcpus: 1,
        memoryMb: 512,
        createdAt: Date.now(),
        timeoutAction: "kill",
        metadata: {},
        envVars: {},
        accessToken: "",
        internetAccess: true,
        envdVersion: "",
      }),
    );

    agent = await startAgentProcess(first.restartOptions);
    const listed = await agent.client.listSandboxes({});
    expect(listed.sandboxes.map((s) => s.sandboxId).sort()).toEqual([...ids, failed].sort());
    expect(
      listed.sandboxes.filter((s) => ids.includes(s.sandboxId)).every((s) => s.state === SandboxState.RUNNING),
    ).toBe(true);
    const kept = (await agent.client.getSandbox({ sandboxId: failed })).sandbox;
    expect(kept?.state).toBe(SandboxState.ERROR);
    expect(kept?.error).toBe("resume failed: test");
    await agent.client.destroySandbox({ sandboxId: failed });
    const read = await agent.client.readFile({ sandboxId: ids[0] ?? "", path: "/home/user/kept.txt" });
    expect(text(read.content)).toBe("kept");
    const who = await agent.client.exec({ sandboxId: ids[1] ?? "", cmd: "id", args: ["-un"] });
    expect(text(who.stdout)).toBe("user\n");
    const netns = (await execa("ip", ["netns", "list"])).stdout;
    expect(netns).not.toContain(`${first.netPrefix}-100`);
    await expect(readState(agent, halfMade)).rejects.toThrow();

    await Promise.all(ids.map((sandboxId) => agent.client.destroySandbox({ sandboxId })));
    expect(await leftovers(agent, pids)).toEqual([]);
  });
});
