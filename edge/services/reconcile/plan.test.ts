import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { TEMPLATE_BUILD_METADATA } from "../../../lib/template-builds.js";
import {
  type Reap,
  ReapSchema,
  type Sandbox,
  SandboxSchema,
  SandboxState,
  StopReason,
} from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import { type ObservedRow, planHost, reapsToAcknowledge } from "./plan.js";

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

let reapSeq = 0;
function reap(id: string, state: SandboxState, stopReason = StopReason.UNSPECIFIED): Reap {
  reapSeq++;
  return create(ReapSchema, {
    reapId: `reap_${String(reapSeq).padStart(16, "0")}`,
    reapedAt: timestampFromDate(ago(10_000)),
    sandbox: onHost(id, state, { stopReason }),
  });
}

describe("planHost", () => {
  it("changes nothing when the host and the database agree", () => {
    const plan = planHost(
      hostId,
      [row("a"), row("b", { state: "paused" })],
      { sandboxes: [onHost("a"), onHost("b", SandboxState.PAUSED)], reaps: [] },
      now,
      options,
    );
    expect(plan).toEqual({ transitions: [], orphans: [] });
  });

  it("keeps the version it read, so the write is a compare-and-set", () => {
    const plan = planHost(hostId, [row("a", { version: 41 })], { sandboxes: [], reaps: [] }, now, options);
    expect(plan.transitions).toMatchObject([{ id: "a", version: 41, fromState: "running", toState: "stopped" }]);
  });

  it("takes the stop reason from the reaped list, else lost", () => {
    const reaped = reap("a", SandboxState.STOPPED, StopReason.TIMEOUT);
    const plan = planHost(hostId, [row("a"), row("b")], { sandboxes: [], reaps: [reaped] }, now, options);
    expect(plan.transitions.map((t) => [t.id, t.rule, t.stopReason])).toEqual([
      ["a", "stopped", "timeout"],
      ["b", "stopped", "lost"],
    ]);
  });

  it("leaves creates in flight alone, on either side", () => {
    const plan = planHost(
      hostId,
      [row("a", { state: "pending", updatedAt: ago(1000) }), row("b", { state: "starting", updatedAt: ago(1000) })],
      { sandboxes: [onHost("a", SandboxState.STARTING)], reaps: [] },
      now,
      options,
    );
    expect(plan).toEqual({ transitions: [], orphans: [] });
  });

  it("does not judge a row of another host that is mid-create, but destroys a copy of a settled one", () => {
    const plan = planHost(
      hostId,
      [row("a", { hostId: "host_b", state: "pending" }), row("b", { hostId: "host_b", state: "running" })],
      { sandboxes: [onHost("a"), onHost("b")], reaps: [] },
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
      { sandboxes: [onHost("kill"), onHost("pause"), onHost("later")], reaps: [] },
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
        reaps: [],
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
      { sandboxes: [onHost("fresh", SandboxState.PAUSED), onHost("stale")], reaps: [] },
      now,
      options,
    );
    expect(plan.transitions.map((t) => [t.id, t.rule, t.toState])).toEqual([["stale", "stuck", "running"]]);
  });

  it("follows a host-side error", () => {
    const plan = planHost(
      hostId,
      [row("a")],
      { sandboxes: [onHost("a", SandboxState.ERROR, { error: "resume failed" })], reaps: [] },
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
        reaps: [],
      },
      now,
      options,
    );
    expect(plan.orphans.map((o) => o.id)).toEqual(["stopped-old", "unknown-old"]);
  });

  it("leaves a template build's sandbox to its agent, but not a tenant's sandbox that claims the key", () => {
    const buildKey = { metadata: { [TEMPLATE_BUILD_METADATA]: "bld_1" } };
    const plan = planHost(
      hostId,
      [row("tenant", { state: "stopped", stoppedAt: ago(120_000) })],
      {
        sandboxes: [
          onHost("build-old", SandboxState.RUNNING, buildKey),
          onHost("tenant", SandboxState.RUNNING, buildKey),
        ],
        reaps: [],
      },
      now,
      options,
    );
    expect(plan.orphans.map((o) => o.id)).toEqual(["tenant"]);
  });
});

describe("reaps, kept by the host until acknowledged", () => {
  it("takes a sandbox's last reap: auto-paused, resumed, then killed is stopped (timeout)", () => {
    const reaps = [reap("a", SandboxState.PAUSED), reap("a", SandboxState.STOPPED, StopReason.TIMEOUT)];
    const plan = planHost(hostId, [row("a")], { sandboxes: [], reaps }, now, options);
    expect(plan.transitions.map((t) => [t.id, t.toState, t.stopReason])).toEqual([["a", "stopped", "timeout"]]);
  });

  it("acknowledges a reap once its row change committed, and keeps it when the compare-and-set lost", () => {
    const reaps = [
      reap("a", SandboxState.STOPPED, StopReason.TIMEOUT),
      reap("b", SandboxState.STOPPED, StopReason.TIMEOUT),
    ];
    const report = { sandboxes: [], reaps };
    const rows = [row("a"), row("b")];
    const plan = planHost(hostId, rows, report, now, options);
    expect(plan.transitions.map((t) => t.id)).toEqual(["a", "b"]);
    // b's row was changed by the API between the read and the write: the next sweep plans it again.
    expect(reapsToAcknowledge(hostId, rows, report, plan, new Set(["a"]))).toEqual([reaps[0]?.reapId]);
    expect(reapsToAcknowledge(hostId, rows, report, plan, new Set())).toEqual([]);
  });

  it("acknowledges reaps that need no change (row already stopped, unknown, or on another host)", () => {
    const reaps = [
      reap("done", SandboxState.STOPPED, StopReason.TIMEOUT),
      reap("unknown", SandboxState.STOPPED, StopReason.TIMEOUT),
      reap("moved", SandboxState.STOPPED, StopReason.LOST),
      reap("synced", SandboxState.PAUSED),
    ];
    const rows = [
      row("done", { state: "stopped" }),
      row("moved", { hostId: "host_b", state: "starting" }),
      row("synced", { state: "paused" }),
    ];
    const report = { sandboxes: [onHost("synced", SandboxState.PAUSED)], reaps };
    const plan = planHost(hostId, rows, report, now, options);
    expect(plan.transitions).toEqual([]);
    expect(reapsToAcknowledge(hostId, rows, report, plan, new Set())).toEqual(reaps.map((r) => r.reapId));
  });

  it("keeps a reap while the API is changing its row, so a stuck pause still learns the reason", () => {
    const reaps = [reap("a", SandboxState.STOPPED, StopReason.TIMEOUT)];
    const rows = [row("a", { state: "pausing", updatedAt: ago(1_000) })];
    const report = { sandboxes: [], reaps };
    const plan = planHost(hostId, rows, report, now, options);
    expect(plan.transitions).toEqual([]);
    expect(reapsToAcknowledge(hostId, rows, report, plan, new Set())).toEqual([]);
    // Stale: the stuck rule settles it with the reaper's reason, and then the reap can go.
    const stale = [row("a", { state: "pausing" })];
    const settled = planHost(hostId, stale, report, now, options);
    expect(settled.transitions.map((t) => [t.rule, t.toState, t.stopReason])).toEqual([
      ["stuck", "stopped", "timeout"],
    ]);
    expect(reapsToAcknowledge(hostId, stale, report, settled, new Set(["a"]))).toEqual([reaps[0]?.reapId]);
  });
});
