import { describe, expect, it } from "vitest";
import { loadImageBuilderConfig } from "./config.js";

describe("the image builder's configuration", () => {
  it("builds the microvm kernel unless told to skip it, and refuses anything else", () => {
    expect(loadImageBuilderConfig({}).microvmKernel).toBe("build");
    expect(loadImageBuilderConfig({ WRENN_MICROVM_KERNEL: "skip" }).microvmKernel).toBe("skip");
    expect(() => loadImageBuilderConfig({ WRENN_MICROVM_KERNEL: "no" })).toThrow(/WRENN_MICROVM_KERNEL/);
  });
});
