import { describe, expect, it } from "vitest";
import { ResolvedNames } from "./resolved-names.js";

describe("ResolvedNames", () => {
  it("names an address while its answer is fresh, per sandbox", () => {
    let now = 0;
    const names = new ResolvedNames({ now: () => now });
    names.remember("sb1", "a.example.test", ["192.88.99.10", "192.88.99.11"], 30);
    expect(names.nameOf("sb1", "192.88.99.11")).toBe("a.example.test");
    expect(names.nameOf("sb2", "192.88.99.11")).toBeUndefined();
    names.remember("sb1", "b.example.test", ["192.88.99.11"], 60);
    expect(names.nameOf("sb1", "192.88.99.11")).toBe("b.example.test");
    now = 31_000;
    expect(names.nameOf("sb1", "192.88.99.10")).toBeUndefined();
    expect(names.nameOf("sb1", "192.88.99.11")).toBe("b.example.test");
    now = 61_000;
    names.prune();
    expect(names.nameOf("sb1", "192.88.99.11")).toBeUndefined();
  });

  it("keeps at most maxPerSandbox addresses, the latest answers", () => {
    const names = new ResolvedNames({ maxPerSandbox: 3 });
    for (let i = 1; i <= 5; i++) names.remember("sb", `n${i}.test`, [`192.88.99.${i}`], 60);
    expect([1, 2, 3, 4, 5].map((i) => names.nameOf("sb", `192.88.99.${i}`))).toEqual([
      undefined,
      undefined,
      "n3.test",
      "n4.test",
      "n5.test",
    ]);
  });
});
