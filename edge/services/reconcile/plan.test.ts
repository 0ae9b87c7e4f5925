import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { type Sandbox, SandboxSchema, SandboxState, StopReason } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import { type ObservedRow, planHost } from "./plan.js";

const now = new Date("2026-11-29T10:00:00Z");
const ago = (ms: number) => new Date(now.getTime() - ms);
const options = { orphanGraceMs: 60_000, stuckAfterMs: 600_000 };
const hostId = "host_a";

function row(id: string, fields: Partial<ObservedRow> = {}): ObservedRow {
  return {
    id,
    hostId,
    state: "running",
    version: 3,
    onTimeout: "kill",
    endAt: null,
    updatedAt: ago(3_600_000),
    stoppedAt: null,
    ...fields,
  };
}

function onHost(
  id: string,
  state = SandboxState.RUNNING,
  fields: MessageInitShape<typeof SandboxSchema> = {},
): Sandbox {
  return create(SandboxSchema, { sandboxId: id, state, createdAt: timestampFromDate(ago(3_600_000)), ...fields });
}

describe("planHost", () => {
  it("changes nothing when the host and the database agree", () => {
    const plan = planHost(
      hostId,
      [row("a"), row("b", { state: "paused" })],
      { sandboxes: [onHost("a"), onHost("b", SandboxState.PAUSED)], reaped: [] },
      now,
      options,
    );
    expect(plan).toEqual({ transitions: [], orphans: [] });
  });

  it("keeps the version it read, so the write is a compare-and-set", () => {
    const plan = planHost(hostId, [row("a", { version: 41 })], { sandboxes: [], reaped: [] }, now, options);
    expect(plan.transitions).toMatchObject([{ id: "a", version: 41, fromState: "running", toState: "stopped" }]);
  });

  it("takes the stop reason from the reaped list, else lost", () => {
    const reaped = { ...onHost("a"), state: SandboxState.STOPPED, stopReason: StopReason.TIMEOUT };
    const plan = planHost(hostId, [row("a"), row("b")], { sandboxes: [], reaped: [reaped] }, now, options);
    expect(plan.transitions.map((t) => [t.id, t.rule, t.stopReason])).toEqual([
      ["a", "stopped", "timeout"],
      ["b", "stopped", "lost"],
    ]);
  });

  it("leaves creates in flight alone, on either side", () => {
    const plan = planHost(
      hostId,
      [row("a", { state: "pending", updatedAt: ago(1000) }), row("b", { state: "starting", updatedAt: ago(1000) })],
      { sandboxes: [onHost("a", SandboxState.STARTING)], reaped: [] },
      now,
      options,
    );
    expect(plan).toEqual({ transitions: [], orphans: [] });
  });

  it("does not judge a row of another host that is mid-create, but destroys a copy of a settled one", () => {
    const plan = planHost(
      hostId,
      [row("a", { hostId: "host_b", state: "pending" }), row("b", { hostId: "host_b", state: "running" })],
      { sandboxes: [onHost("a"), onHost("b")], reaped: [] },
      now,
      options,
    );
    expect(plan.transitions).toEqual([]);
    expect(plan.orphans).toEqual([{ id: "b", cause: "placed on another host" }]);
  });

  it("expires only when the host still runs it; the action decides pause or destroy", () => {
    const plan = planHost(
      hostId,
      [
        row("kill", { endAt: ago(1) }),
        row("pause", { endAt: ago(1), onTimeout: "pause" }),
        row("later", { endAt: new Date(now.getTime() + 1000) }),
      ],
      { sandboxes: [onHost("kill"), onHost("pause"), onHost("later")], reaped: [] },
      now,
      options,
    );
    expect(plan.transitions.map((t) => [t.id, t.toState, t.hostAction, t.stopReason])).toEqual([
      ["kill", "stopped", "destroy", "timeout"],
      ["pause", "pausing", "pause", null],
    ]);
  });

  it("restores missing sandboxes to what the host reports, with its end time", () => {
    const endAt = new Date(now.getTime() + 60_000);
    const plan = planHost(
      hostId,
      [row("a", { state: "missing" }), row("b", { state: "missing" }), row("c", { state: "missing" })],
      {
        sandboxes: [
          onHost("a", SandboxState.RUNNING, { endAt: timestampFromDate(endAt) }),
          onHost("b", SandboxState.PAUSED),
        ],
        reaped: [],
      },
      now,
      options,
    );
    expect(plan.transitions.map((t) => [t.id, t.rule, t.toState, t.endAt])).toEqual([
      ["a", "restored", "running", endAt],
      ["b", "restored", "paused", null],
      ["c", "stopped", "stopped", null],
    ]);
  });

  it("settles only stale transitional rows", () => {
    const plan = planHost(
      hostId,
      [row("fresh", { state: "pausing", updatedAt: ago(1000) }), row("stale", { state: "resuming" })],
      { sandboxes: [onHost("fresh", SandboxState.PAUSED), onHost("stale")], reaped: [] },
      now,
      options,
    );
    expect(plan.transitions.map((t) => [t.id, t.rule, t.toState])).toEqual([["stale", "stuck", "running"]]);
  });

  it("follows a host-side error", () => {
    const plan = planHost(
      hostId,
      [row("a")],
      { sandboxes: [onHost("a", SandboxState.ERROR, { error: "resume failed" })], reaped: [] },
      now,
      options,
    );
    expect(plan.transitions).toMatchObject([{ toState: "error", error: "resume failed", rule: "synced" }]);
  });

  it("counts the orphan grace from the host's creation time, or from when the row stopped", () => {
    const plan = planHost(
      hostId,
      [
        row("stopped-old", { state: "stopped", stoppedAt: ago(120_000) }),
        row("stopped-new", { state: "stopped", stoppedAt: ago(1000) }),
      ],
      {
        sandboxes: [
          onHost("stopped-old"),
          onHost("stopped-new"),
          onHost("unknown-old"),
          onHost("unknown-new", SandboxState.RUNNING, { createdAt: timestampFromDate(ago(1000)) }),
        ],
        reaped: [],
      },
      now,
      options,
    );
    expect(plan.orphans.map((o) => o.id)).toEqual(["stopped-old", "unknown-old"]);
  });
});
