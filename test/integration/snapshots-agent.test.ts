import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { beforeAll, describe, expect, it } from "vitest";
import { SandboxState } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { leftovers, newSandboxId, TEMPLATE, text } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess, suiteRuntime } from "../helpers/agent-process.js";
import { cleanUpSuiteAgent, codeOf, startSuiteAgent } from "../helpers/agent-suite.js";

/**
 * Issue 17, snapshots on the host agent (namespace here; the integration-gvisor project runs this file
 * again on gVisor): a snapshot keeps the source's files as they were (a deleted template file stays
 * deleted, later writes of the source do not leak in), sandboxes from it start afresh on those files,
 * each with its own writable layer; the source runs (or stays paused) on; the snapshot outlives its
 * source, survives an agent restart, and its files go only when no sandbox started from it is left.
 */

const SHELL = "/bin/bash";
/** A file of the template that the source deletes: the snapshot must keep it deleted (an overlay whiteout). */
const TEMPLATE_FILE = "/etc/issue.net";

describe(`agent snapshots (${suiteRuntime()})`, () => {
  let agent: AgentProcess;

  beforeAll(async () => {
    agent = await startSuiteAgent({ runtime: "namespace" });
  });
  cleanUpSuiteAgent(() => agent);

  const sh = async (sandboxId: string, script: string, user = "") => {
    const r = await agent.client.exec({ sandboxId, cmd: SHELL, args: ["-c", script], user });
    return { out: text(r.stdout).trim(), err: text(r.stderr).trim(), code: r.exitCode };
  };
  const savedDir = (snapshotId: string) => join(agent.stateDir, "snapshots", `saved-${snapshotId}`);
  const fromSnapshot = (snapshotId: string) => {
    const sandboxId = newSandboxId();
    return agent.client.createSandbox({ sandboxId, template: TEMPLATE, snapshotId }).then(() => sandboxId);
  };

  it("keeps the source's files as they were; sandboxes from it diverge; it outlives the source; delete waits for its users", async () => {
    const c = agent.client;
    const source = newSandboxId();
    await c.createSandbox({ sandboxId: source, template: TEMPLATE });
    expect(
      await sh(source, "echo first > ~/first.txt && mkdir -p ~/dir/sub && echo deep > ~/dir/sub/file"),
    ).toMatchObject({
      code: 0,
    });
    expect(await sh(source, `rm ${TEMPLATE_FILE} && test ! -e ${TEMPLATE_FILE}`, "root")).toMatchObject({ code: 0 });

    const snapshotId = `snap-${source.slice(0, 8)}`;
    let t = performance.now();
    const created = await c.createSnapshot({ sandboxId: source, snapshotId });
    const snapshotMs = performance.now() - t;
    expect(created.snapshot).toMatchObject({
      snapshotId,
      sourceSandboxId: source,
      template: TEMPLATE,
      keepsMemory: false,
      users: 0,
    });
    // The host says what its snapshots keep.
    expect((await c.getHostInfo({})).snapshotsKeepMemory).toBe(false);
    expect(Number(created.snapshot?.sizeBytes)).toBeGreaterThan(0);
    expect(created.sandbox?.state).toBe(SandboxState.RUNNING);
    // Repeating the create returns the same snapshot.
    const again = await c.createSnapshot({ sandboxId: source, snapshotId });
    expect(again.snapshot?.createdAt).toEqual(created.snapshot?.createdAt);

    // The source runs on; what it writes now is not in the snapshot.
    expect(await sh(source, "echo later > ~/later.txt && cat ~/first.txt")).toMatchObject({ code: 0, out: "first" });

    t = performance.now();
    const [a, b] = await Promise.all([fromSnapshot(snapshotId), fromSnapshot(snapshotId)]);
    const createMs = (performance.now() - t) / 2;
    console.info(
      `${suiteRuntime()}: snapshot ${Math.round(snapshotMs)} ms, create from it ~${Math.round(createMs)} ms each (2 at once)`,
    );
    for (const id of [a, b]) {
      const seen = await sh(
        id,
        `cat ~/first.txt ~/dir/sub/file; stat -c %U ~/first.txt; test -e ${TEMPLATE_FILE} && echo template-file-back; test -e ~/later.txt && echo later-leaked; hostname`,
      );
      expect(seen.out.split("\n")).toEqual(["first", "deep", "user", id]);
    }
    // Each has its own writable layer.
    expect(await sh(a, "echo mine > ~/a.txt && cat ~/a.txt")).toMatchObject({ out: "mine" });
    expect(await sh(b, "test -e ~/a.txt && echo seen || echo absent")).toMatchObject({ out: "absent" });
    expect(await sh(source, "test -e ~/a.txt && echo seen || echo absent")).toMatchObject({ out: "absent" });
    expect((await c.listSnapshots({})).snapshots.find((s) => s.snapshotId === snapshotId)?.users).toBe(2);

    // A snapshot of a sandbox that started from a snapshot holds all of its files.
    const chain = `chain-${source.slice(0, 8)}`;
    await c.createSnapshot({ sandboxId: a, snapshotId: chain });
    const fromChain = await fromSnapshot(chain);
    expect(
      await sh(fromChain, `cat ~/first.txt ~/a.txt; test -e ${TEMPLATE_FILE} && echo template-file-back; hostname`),
    ).toMatchObject({ out: `first\nmine\n${fromChain}` });
    await c.destroySandbox({ sandboxId: fromChain });
    await c.deleteSnapshot({ snapshotId: chain });

    // The snapshot outlives its source.
    await c.destroySandbox({ sandboxId: source });
    const third = await fromSnapshot(snapshotId);
    expect(await sh(third, "cat ~/first.txt")).toMatchObject({ out: "first" });

    // Deleted while sandboxes from it run: forgotten at once, its files kept until the last one ends.
    await c.deleteSnapshot({ snapshotId });
    expect((await c.listSnapshots({})).snapshots.map((s) => s.snapshotId)).not.toContain(snapshotId);
    expect(await codeOf(fromSnapshot(snapshotId))).toBe(Code.NotFound);
    expect(existsSync(savedDir(snapshotId))).toBe(true);
    await c.destroySandbox({ sandboxId: a });
    expect(await sh(b, "cat ~/first.txt")).toMatchObject({ out: "first" });
    await Promise.all([b, third].map((sandboxId) => c.destroySandbox({ sandboxId })));
    expect(existsSync(savedDir(snapshotId))).toBe(false);
    expect(await codeOf(c.deleteSnapshot({ snapshotId }))).toBe(Code.NotFound);
    expect(await leftovers(agent)).toEqual([]);
  });

  it("snapshots a paused sandbox, which stays paused", async () => {
    const c = agent.client;
    const source = newSandboxId();
    await c.createSandbox({ sandboxId: source, template: TEMPLATE });
    expect(await sh(source, "echo kept > ~/kept.txt && sync")).toMatchObject({ code: 0 });
    await c.pauseSandbox({ sandboxId: source });
    const snapshotId = `paused-${source.slice(0, 8)}`;
    const { sandbox } = await c.createSnapshot({ sandboxId: source, snapshotId });
    expect(sandbox?.state).toBe(SandboxState.PAUSED);
    expect((await c.getSandbox({ sandboxId: source })).sandbox?.state).toBe(SandboxState.PAUSED);
    const copy = await fromSnapshot(snapshotId);
    expect(await sh(copy, "cat ~/kept.txt")).toMatchObject({ out: "kept" });
    await c.resumeSandbox({ sandboxId: source });
    expect(await sh(source, "cat ~/kept.txt")).toMatchObject({ out: "kept" });
    await c.destroySandbox({ sandboxId: copy });
    await c.deleteSnapshot({ snapshotId });
    expect(existsSync(savedDir(snapshotId))).toBe(false);

    // Paused without memory (its processes ended, its files kept): the snapshot reads the kept files.
    await c.pauseSandbox({ sandboxId: source, keepMemory: false });
    await c.createSnapshot({ sandboxId: source, snapshotId: `${snapshotId}-halted` });
    expect((await c.getSandbox({ sandboxId: source })).sandbox?.state).toBe(SandboxState.PAUSED);
    const fromHalted = await fromSnapshot(`${snapshotId}-halted`);
    expect(await sh(fromHalted, "cat ~/kept.txt")).toMatchObject({ out: "kept" });
    await c.resumeSandbox({ sandboxId: source });
    expect(await sh(source, "cat ~/kept.txt")).toMatchObject({ out: "kept" });
    // The next tests share this agent and count what it holds.
    await Promise.all([fromHalted, source].map((sandboxId) => c.destroySandbox({ sandboxId })));
    await c.deleteSnapshot({ snapshotId: `${snapshotId}-halted` });
    expect(existsSync(savedDir(`${snapshotId}-halted`))).toBe(false);
  });

  it("answers bad and unknown snapshot ids clearly and changes nothing", async () => {
    const c = agent.client;
    const source = newSandboxId();
    await c.createSandbox({ sandboxId: source, template: TEMPLATE });
    const before = await readdir(join(agent.stateDir, "snapshots")).catch(() => [] as string[]);
    for (const bad of ["../../etc", "a/b", "", "x".repeat(65), "UPPER", "..", "."]) {
      expect(await codeOf(c.createSnapshot({ sandboxId: source, snapshotId: bad })), bad).toBe(Code.InvalidArgument);
      if (bad !== "") {
        expect(await codeOf(c.deleteSnapshot({ snapshotId: bad })), bad).toBe(Code.InvalidArgument);
        expect(
          await codeOf(c.createSandbox({ sandboxId: newSandboxId(), template: TEMPLATE, snapshotId: bad })),
          bad,
        ).toBe(Code.InvalidArgument);
      }
    }
    expect(await codeOf(c.createSnapshot({ sandboxId: "../../../../tmp/xx", snapshotId: "ok" }))).toBe(
      Code.InvalidArgument,
    );
    expect(await codeOf(c.createSnapshot({ sandboxId: newSandboxId(), snapshotId: "nobody" }))).toBe(Code.NotFound);
    expect(await codeOf(c.deleteSnapshot({ snapshotId: "unknown-snapshot" }))).toBe(Code.NotFound);
    expect(
      await codeOf(c.createSandbox({ sandboxId: newSandboxId(), template: TEMPLATE, snapshotId: "unknown-snapshot" })),
    ).toBe(Code.NotFound);
    // A snapshot of one template does not start another.
    await c.createSnapshot({ sandboxId: source, snapshotId: "mismatch" });
    expect(
      await codeOf(c.createSandbox({ sandboxId: newSandboxId(), template: "python", snapshotId: "mismatch" })),
    ).toBe(Code.InvalidArgument);
    await c.deleteSnapshot({ snapshotId: "mismatch" });
    expect((await c.listSandboxes({})).sandboxes.map((s) => s.sandboxId)).toEqual([source]);
    expect((await c.listSnapshots({})).snapshots).toEqual([]);
    expect(await readdir(join(agent.stateDir, "snapshots")).catch(() => [] as string[])).toEqual(before);
  });

  it("keeps snapshots, and their users' claim on deleted ones, across an agent restart", async () => {
    const source = newSandboxId();
    await agent.client.createSandbox({ sandboxId: source, template: TEMPLATE });
    expect(await sh(source, "echo survives > ~/restart.txt")).toMatchObject({ code: 0 });
    const snapshotId = `restart-${source.slice(0, 8)}`;
    await agent.client.createSnapshot({ sandboxId: source, snapshotId });
    const user = await fromSnapshot(snapshotId);
    const deleted = `gone-${source.slice(0, 8)}`;
    await agent.client.createSnapshot({ sandboxId: source, snapshotId: deleted });
    const reader = await fromSnapshot(deleted);
    await agent.client.deleteSnapshot({ snapshotId: deleted });

    const first = agent;
    first.kill9();
    agent = await startAgentProcess(first.restartOptions);
    const listed = (await agent.client.listSnapshots({})).snapshots;
    expect(listed.map((s) => [s.snapshotId, s.sourceSandboxId, s.users])).toEqual([[snapshotId, source, 1]]);
    expect(existsSync(savedDir(deleted))).toBe(true);
    const after = await fromSnapshot(snapshotId);
    expect(await sh(after, "cat ~/restart.txt")).toMatchObject({ out: "survives" });
    expect(await sh(user, "cat ~/restart.txt")).toMatchObject({ out: "survives" });
    await agent.client.destroySandbox({ sandboxId: reader });
    expect(existsSync(savedDir(deleted))).toBe(false);
    await agent.client.deleteSnapshot({ snapshotId });
    expect(existsSync(savedDir(snapshotId))).toBe(true);
    await Promise.all([source, user, after].map((sandboxId) => agent.client.destroySandbox({ sandboxId })));
    expect(existsSync(savedDir(snapshotId))).toBe(false);
    expect(await leftovers(agent)).toEqual([]);
  });
});

describe(`agent snapshots without a disk quota (${suiteRuntime()})`, () => {
  let agent: AgentProcess;

  beforeAll(async () => {
    // The writable layer is then a directory on the host rather than an ext4 image: the other copy path.
    agent = await startSuiteAgent({ runtime: "namespace", env: { AGENT_DISK_QUOTA_MB: "0" } });
  });
  cleanUpSuiteAgent(() => agent);

  it("keeps written files and deleted template files deleted", async () => {
    const c = agent.client;
    const source = newSandboxId();
    await c.createSandbox({ sandboxId: source, template: TEMPLATE });
    const run = async (sandboxId: string, script: string, user = "") =>
      text((await c.exec({ sandboxId, cmd: SHELL, args: ["-c", script], user })).stdout).trim();
    await run(source, `echo noquota > ~/f.txt; rm ${TEMPLATE_FILE}`, "root");
    await run(source, "echo mine > ~/user.txt");
    await c.createSnapshot({ sandboxId: source, snapshotId: "no-quota" });
    const copy = newSandboxId();
    await c.createSandbox({ sandboxId: copy, template: TEMPLATE, snapshotId: "no-quota" });
    expect(
      await run(
        copy,
        `cat /root/f.txt /home/user/user.txt; stat -c %U /home/user/user.txt; test -e ${TEMPLATE_FILE} || echo gone`,
        "root",
      ),
    ).toBe("noquota\nmine\nuser\ngone");
    await Promise.all([source, copy].map((sandboxId) => c.destroySandbox({ sandboxId })));
    await c.deleteSnapshot({ snapshotId: "no-quota" });
    expect(await leftovers(agent)).toEqual([]);
  });
});
