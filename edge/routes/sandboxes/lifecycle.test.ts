import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { SandboxState, SnapshotFileSchema, StopReason } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import {
  expectError,
  newSandbox,
  routeStack,
  sandboxEventRows,
  sandboxRow,
  updateSandboxRow,
} from "../../../test/helpers/edge-routes.js";

// Issue 17, the edge's side of the lifecycle: the policy in /v1 (create, info, timeout, pause), and
// the read repair — a row still `running` past its end time follows what its host did at that time
// (the host's timer paused or killed it) on the next read, without a reconcile sweep. The host is the
// fake agent of the route tests (a double at the Connect boundary).

const stack = routeStack();

interface SandboxJson {
  id: string;
  state: string;
  onTimeout: string;
  keepMemory: boolean;
  autoResume: boolean;
  pausedWithoutMemory: boolean;
  endAt: string | null;
  stopReason: string | null;
}

async function getSandbox(key: string, id: string): Promise<SandboxJson> {
  const res = await stack.h.request("GET", `/v1/sandboxes/${id}`, { key });
  expect(res.status).toBe(200);
  return (await res.json()) as SandboxJson;
}

/** Moves the row's end time into the past, as if the timeout ran out a moment ago. */
const expire = (id: string) => updateSandboxRow(stack.h, id, { endAt: new Date(Date.now() - 100) });

/** The fake host's own record of the sandbox (what its timer changed). */
const onHost = (id: string) => {
  const sb = stack.agent.sandboxes.get(id);
  if (!sb) throw new Error(`${id} is not on the fake host`);
  return sb.sandbox;
};

describe("the lifecycle policy in /v1", () => {
  it("creates with onTimeout, keepMemory and autoResume and shows them in info", async () => {
    const team = await stack.h.newTeam();
    const plain = await newSandbox(stack.h, team.key);
    expect(await getSandbox(team.key, plain.id)).toMatchObject({
      onTimeout: "kill",
      keepMemory: true,
      autoResume: false,
      pausedWithoutMemory: false,
    });
    const filesOnly = await newSandbox(stack.h, team.key, { onTimeout: "pause", keepMemory: false });
    expect(filesOnly).toMatchObject({ onTimeout: "pause", keepMemory: false, autoResume: false });
    const waking = await newSandbox(stack.h, team.key, { onTimeout: "pause", autoResume: true });
    expect(await getSandbox(team.key, waking.id)).toMatchObject({ keepMemory: true, autoResume: true });
  });

  it("refuses keepMemory: false without onTimeout pause, or with autoResume (E2B's rules)", async () => {
    const team = await stack.h.newTeam();
    const killing = await stack.h.request("POST", "/v1/sandboxes", {
      key: team.key,
      json: { onTimeout: "kill", keepMemory: false },
    });
    expect((await expectError(killing, 400, "BAD_REQUEST")).error.message).toMatch(/onTimeout=pause/);
    const waking = await stack.h.request("POST", "/v1/sandboxes", {
      key: team.key,
      json: { onTimeout: "pause", keepMemory: false, autoResume: true },
    });
    expect((await expectError(waking, 400, "BAD_REQUEST")).error.message).toMatch(/autoResume/);
  });

  it("changes keepMemory with the timeout, and pauses without memory on request", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key, { onTimeout: "pause" });
    const set = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/timeout`, {
      key: team.key,
      json: { timeoutSec: 60, keepMemory: false },
    });
    expect(set.status).toBe(200);
    expect(await set.json()).toMatchObject({ keepMemory: false, timeoutSec: 60 });
    const paused = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/pause`, {
      key: team.key,
      json: { keepMemory: false },
    });
    expect(paused.status).toBe(200);
    expect(await paused.json()).toMatchObject({ state: "paused", pausedWithoutMemory: true });
    const resumed = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/resume`, { key: team.key, json: {} });
    expect(await resumed.json()).toMatchObject({ state: "running", pausedWithoutMemory: false });
  });
});

describe("E2B's connect with memory: false (onResume: 'reboot')", () => {
  it("refuses it for a sandbox paused with memory, and resumes one paused without", async () => {
    const team = await stack.h.newTeam();
    const withMemory = await newSandbox(stack.h, team.key);
    await stack.h.request("POST", `/v1/sandboxes/${withMemory.id}/pause`, { key: team.key });
    const refused = await stack.h.request("POST", `/v2/sandboxes/${withMemory.id}/connect`, {
      key: team.key,
      json: { timeout: 60, memory: false },
    });
    expect(refused.status).toBe(400);
    expect(await refused.text()).toMatch(/paused with its memory/);
    expect(onHost(withMemory.id).state).toBe(SandboxState.PAUSED);

    const filesOnly = await newSandbox(stack.h, team.key);
    await stack.h.request("POST", `/v1/sandboxes/${filesOnly.id}/pause`, {
      key: team.key,
      json: { keepMemory: false },
    });
    const resumed = await stack.h.request("POST", `/v2/sandboxes/${filesOnly.id}/connect`, {
      key: team.key,
      json: { timeout: 60, memory: false },
    });
    expect(resumed.status).toBe(201);
  });
});

describe("read repair at the end time", () => {
  it("a row past its end time that the host paused reads paused (get, list), recorded once", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key, { onTimeout: "pause" });
    await expire(sb.id);
    const host = onHost(sb.id);
    host.state = SandboxState.PAUSED;
    host.endAt = undefined;
    host.pausedWithoutMemory = true;
    host.snapshotFiles = [create(SnapshotFileSchema, { name: "disk", sizeBytes: 4096n })];

    const running = await stack.h.request("GET", "/v1/sandboxes?state=running", { key: team.key });
    expect(((await running.json()) as { sandboxes: SandboxJson[] }).sandboxes.map((s) => s.id)).not.toContain(sb.id);
    expect(await getSandbox(team.key, sb.id)).toMatchObject({
      state: "paused",
      endAt: null,
      pausedWithoutMemory: true,
    });
    expect((await sandboxRow(stack.h, sb.id))?.snapshotBytes).toBe(4096);
    const events = await sandboxEventRows(stack.h, sb.id);
    const repairs = events.filter((e) => e.actor === "reconcile");
    expect(repairs.map((e) => [e.fromState, e.toState])).toEqual([["running", "paused"]]);
    expect(repairs[0]?.detail).toMatchObject({ cause: expect.stringMatching(/read repair/) });
  });

  it("a row past its end time that the host killed reads stopped with the host's reason", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    await expire(sb.id);
    onHost(sb.id).state = SandboxState.STOPPED;
    onHost(sb.id).stopReason = StopReason.TIMEOUT;
    expect(await getSandbox(team.key, sb.id)).toMatchObject({ state: "stopped", stopReason: "timeout" });
    // A pause now is refused as for any stopped sandbox: the repair ran before the lifecycle step.
    const pause = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/pause`, { key: team.key });
    await expectError(pause, 409, "CONFLICT");
  });

  it("a row past its end time that the host is tearing down reads stopped at once", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    await expire(sb.id);
    onHost(sb.id).state = SandboxState.STOPPING;
    const started = Date.now();
    expect(await getSandbox(team.key, sb.id)).toMatchObject({ state: "stopped", stopReason: "timeout" });
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it("a row past its end time whose host no longer has it reads stopped", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    await expire(sb.id);
    stack.agent.sandboxes.delete(sb.id);
    expect(await getSandbox(team.key, sb.id)).toMatchObject({ state: "stopped", stopReason: "timeout" });
  });

  it("a row past its end time that the host still runs with a later end time follows it", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    await expire(sb.id);
    const later = new Date(Date.now() + 120_000);
    onHost(sb.id).endAt = timestampFromDate(later);
    expect(await getSandbox(team.key, sb.id)).toMatchObject({ state: "running", endAt: later.toISOString() });
  });

  it("a timeout change that reaches the host just after its timer paused the sandbox records the pause", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key, { onTimeout: "pause" });
    // The row still runs (its end time not yet passed by the edge's clock); the host already paused it.
    onHost(sb.id).state = SandboxState.PAUSED;
    const set = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/timeout`, {
      key: team.key,
      json: { timeoutSec: 600 },
    });
    expect(set.status).toBe(200);
    expect(await set.json()).toMatchObject({ state: "paused", endAt: null, timeoutSec: 600 });
    // E2B's connect then resumes it rather than answering for a sandbox it thinks runs.
    const connected = await stack.h.request("POST", `/sandboxes/${sb.id}/connect`, {
      key: team.key,
      json: { timeout: 60 },
    });
    expect(connected.status).toBe(201);
    expect(onHost(sb.id).state).toBe(SandboxState.RUNNING);
  });

  it("a host that has not acted yet leaves the row as it is once the wait runs out (the sweep decides)", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key, { onTimeout: "pause" });
    await expire(sb.id);
    // The fake host keeps it running past its end time (its timer never fires).
    onHost(sb.id).endAt = timestampFromDate(new Date(Date.now() - 100));
    const started = Date.now();
    expect(await getSandbox(team.key, sb.id)).toMatchObject({ state: "running" });
    // Not past the grace it gives a host whose timer should have fired (1 s), plus the calls.
    expect(Date.now() - started).toBeLessThan(3_000);
  }, 20_000);
});
