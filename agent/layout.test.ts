import { describe, expect, it } from "vitest";
import { filesLayout } from "./layout.js";

describe("filesLayout", () => {
  it("derives every path from the one root", () => {
    const layout = filesLayout("/srv/wrenn");
    expect(layout.imageRootfsExt4("python")).toBe("/srv/wrenn/images/python/rootfs.ext4");
    expect(layout.sandboxDir("abc")).toBe("/srv/wrenn/sandboxes/abc");
    expect(layout.snapshotDir("abc")).toBe("/srv/wrenn/snapshots/abc");
    expect(layout.tokenFile).toBe("/srv/wrenn/token");
    expect(layout.kernelPath.startsWith("/srv/wrenn/kernels/")).toBe(true);
  });
});
