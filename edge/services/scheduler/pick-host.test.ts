import { describe, expect, it } from "vitest";
import type { HostRow } from "../../db/schema/index.js";
import { loadAfter } from "./pick-host.js";

const host = (capacity: Partial<Pick<HostRow, "capacityVcpus" | "capacityMemoryMb" | "capacityMaxSandboxes">>) =>
  ({ capacityVcpus: 8, capacityMemoryMb: 8192, capacityMaxSandboxes: 10, ...capacity }) as HostRow;

describe("loadAfter", () => {
  const req = { template: "minimal", vcpus: 2, memoryMb: 1024 };

  it("is the most loaded dimension after placing the request", () => {
    expect(loadAfter(host({}), { sandboxes: 0, vcpus: 0, memoryMb: 0 }, req)).toBeCloseTo(0.25);
    expect(loadAfter(host({}), { sandboxes: 8, vcpus: 0, memoryMb: 0 }, req)).toBeCloseTo(0.9);
  });

  it("does not fit when any dimension overflows", () => {
    expect(loadAfter(host({}), { sandboxes: 0, vcpus: 7, memoryMb: 0 }, req)).toBe(Number.POSITIVE_INFINITY);
    expect(loadAfter(host({}), { sandboxes: 10, vcpus: 0, memoryMb: 0 }, req)).toBe(Number.POSITIVE_INFINITY);
    expect(loadAfter(host({}), { sandboxes: 0, vcpus: 0, memoryMb: 7200 }, req)).toBe(Number.POSITIVE_INFINITY);
  });

  it("treats a zero capacity as unlimited", () => {
    expect(loadAfter(host({ capacityMaxSandboxes: 0 }), { sandboxes: 500, vcpus: 0, memoryMb: 0 }, req)).toBeCloseTo(
      0.25,
    );
  });
});
