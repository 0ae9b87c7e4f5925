import { describe, expect, it } from "vitest";
import { ServiceError } from "../errors.js";
import {
  admitPaused,
  admitRunning,
  checkTimeoutQuota,
  defaultTeamQuotas,
  effectiveQuotas,
  type TeamUsage,
} from "./quotas.js";

const idle: TeamUsage = { runningSandboxes: 0, vcpus: 0, memoryMb: 0, pausedSandboxes: 0, pausedDiskMb: 0, apiKeys: 1 };

function refusal(fn: () => void): { code: string; details: unknown } | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof ServiceError) return { code: err.code, details: err.details };
    throw err;
  }
  return undefined;
}

describe("effectiveQuotas", () => {
  it("lays overrides over the defaults and ignores unknown or null fields", () => {
    expect(effectiveQuotas({})).toEqual(defaultTeamQuotas);
    expect(effectiveQuotas(null)).toEqual(defaultTeamQuotas);
    const q = effectiveQuotas({ maxVcpus: 2, allowNoTimeout: true, maxGpus: 3, maxMemoryMb: null } as never);
    expect(q).toEqual({ ...defaultTeamQuotas, maxVcpus: 2, allowNoTimeout: true });
    expect(q).not.toHaveProperty("maxGpus");
  });
});

describe("admissions", () => {
  const quotas = effectiveQuotas({ maxRunningSandboxes: 2, maxVcpus: 4, maxMemoryMb: 2048, maxPausedSandboxes: 1 });

  it("admits up to each running limit, inclusive", () => {
    expect(
      refusal(() => admitRunning(quotas, { ...idle, runningSandboxes: 1, vcpus: 2 }, { vcpus: 2, memoryMb: 2048 })),
    ).toBeUndefined();
    expect(refusal(() => admitRunning(quotas, { ...idle, runningSandboxes: 2 }, { vcpus: 1, memoryMb: 1 }))).toEqual({
      code: "QUOTA_EXCEEDED",
      details: { quota: "maxRunningSandboxes", limit: 2, used: 2 },
    });
    expect(
      refusal(() => admitRunning(quotas, { ...idle, vcpus: 3 }, { vcpus: 2, memoryMb: 1 }))?.details,
    ).toMatchObject({
      quota: "maxVcpus",
    });
    expect(
      refusal(() => admitRunning(quotas, { ...idle, memoryMb: 1024 }, { vcpus: 1, memoryMb: 1025 }))?.details,
    ).toMatchObject({
      quota: "maxMemoryMb",
    });
  });

  it("refuses a pause at the paused count or once snapshots fill the paused disk", () => {
    expect(refusal(() => admitPaused(quotas, idle))).toBeUndefined();
    expect(refusal(() => admitPaused(quotas, { ...idle, pausedSandboxes: 1 }))?.details).toMatchObject({
      quota: "maxPausedSandboxes",
    });
    const disk = effectiveQuotas({ maxPausedDiskMb: 100 });
    expect(refusal(() => admitPaused(disk, { ...idle, pausedDiskMb: 99 }))).toBeUndefined();
    expect(refusal(() => admitPaused(disk, { ...idle, pausedDiskMb: 100 }))?.details).toMatchObject({
      quota: "maxPausedDiskMb",
    });
  });

  it("checks timeouts: never only when allowed, and at most maxTimeoutSec", () => {
    expect(refusal(() => checkTimeoutQuota(defaultTeamQuotas, 0))?.code).toBe("BAD_REQUEST");
    expect(refusal(() => checkTimeoutQuota(defaultTeamQuotas, defaultTeamQuotas.maxTimeoutSec))).toBeUndefined();
    expect(refusal(() => checkTimeoutQuota(defaultTeamQuotas, defaultTeamQuotas.maxTimeoutSec + 1))?.code).toBe(
      "BAD_REQUEST",
    );
    expect(refusal(() => checkTimeoutQuota(effectiveQuotas({ allowNoTimeout: true }), 0))).toBeUndefined();
  });
});
