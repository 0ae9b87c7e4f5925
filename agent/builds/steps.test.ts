import { describe, expect, it } from "vitest";
import { AgentError } from "../errors.js";
import { parseSteps, stepKeys, type WireStep } from "./steps.js";

const hash = "a".repeat(64);
const step = (type: string, args: string[], extra: Partial<WireStep> = {}): WireStep => ({
  type,
  args,
  force: false,
  filesHash: "",
  ...extra,
});

describe("build steps", () => {
  it("parses E2B's five step types", () => {
    const steps = parseSteps(
      [
        step("RUN", ["apt-get install -y jq", "root"]),
        step("COPY", ["src", "/app", "user", "0755"], { filesHash: hash }),
        step("ENV", ["A", "1", "B", "two words"]),
        step("WORKDIR", ["/app"]),
        step("USER", ["user"]),
      ],
      new Set([hash]),
    );
    expect(steps).toEqual([
      { type: "RUN", command: "apt-get install -y jq", user: "root", force: false },
      { type: "COPY", src: "src", dest: "/app", user: "user", mode: 0o755, filesHash: hash, force: false },
      {
        type: "ENV",
        vars: [
          ["A", "1"],
          ["B", "two words"],
        ],
        force: false,
      },
      { type: "WORKDIR", path: "/app", force: false },
      { type: "USER", name: "user", force: false },
    ]);
  });

  it.each([
    [step("NOPE", [])],
    [step("RUN", [])],
    [step("COPY", ["a", "/b"], { filesHash: "b".repeat(64) })],
    [step("COPY", ["a", "/b", "", "999"], { filesHash: hash })],
    [step("ENV", ["A"])],
    [step("ENV", ["1BAD", "x"])],
    [step("WORKDIR", [""])],
    [step("USER", ["Bad User"])],
    [step("RUN", ["x", "not a user!"])],
  ])("refuses %j with INVALID_ARGUMENT", (bad) => {
    let caught: unknown;
    try {
      parseSteps([bad], new Set([hash]));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(AgentError);
    expect((caught as AgentError).code).toBe("INVALID_ARGUMENT");
  });

  it("keys each step by the base and every step before it, not by force", () => {
    const a = parseSteps([step("RUN", ["one"]), step("RUN", ["two"])], new Set());
    const b = parseSteps([step("RUN", ["other"]), step("RUN", ["two"])], new Set());
    const forced = parseSteps([step("RUN", ["one"], { force: true }), step("RUN", ["two"])], new Set());
    const [a0, a1] = stepKeys("minimal@1", a);
    const [b0, b1] = stepKeys("minimal@1", b);
    expect(a0).not.toBe(b0);
    expect(a1).not.toBe(b1);
    expect(stepKeys("minimal@1", forced)).toEqual([a0, a1]);
    expect(stepKeys("minimal@2", a)[0]).not.toBe(a0);
    expect(a0).toMatch(/^[0-9a-f]{64}$/);
  });
});
