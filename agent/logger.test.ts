import { describe, expect, it } from "vitest";
import { createLogger, requestLogFields, withLogContext } from "./logger.js";

describe("the agent's logger", () => {
  it("puts the request id on every line written on a request's behalf, however deep", async () => {
    const lines: string[] = [];
    const logger = createLogger("debug", (line) => lines.push(line)).child({ component: "agent" });
    const sandboxLog = logger.child({ sandboxId: "sbx_1" });
    await withLogContext({ requestId: "req_0123456789" }, async () => {
      logger.info("start");
      await new Promise((resolve) => setTimeout(resolve, 5));
      sandboxLog.warn("after a timer");
      await Promise.resolve().then(() => sandboxLog.error("in a continuation", { err: new Error("boom") }));
    });
    logger.info("between requests");
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.every((l) => l.endsWith("}\n"))).toBe(true);
    expect(records.map((r) => [r.msg, r.component, r.requestId, r.sandboxId])).toEqual([
      ["start", "agent", "req_0123456789", undefined],
      ["after a timer", "agent", "req_0123456789", "sbx_1"],
      ["in a continuation", "agent", "req_0123456789", "sbx_1"],
      ["between requests", "agent", undefined, undefined],
    ]);
    expect(records[2]?.err).toMatchObject({ name: "Error", message: "boom" });
  });

  it("takes the edge's x-request-id only when it looks like one", () => {
    expect(requestLogFields({ "x-request-id": "req_abcdefgh12" })).toEqual({ requestId: "req_abcdefgh12" });
    expect(requestLogFields({})).toEqual({});
    expect(requestLogFields({ "x-request-id": "short" })).toEqual({});
    expect(requestLogFields({ "x-request-id": "x".repeat(129) })).toEqual({});
    expect(requestLogFields({ "x-request-id": 'req_12345678","level":"error' })).toEqual({});
    expect(requestLogFields({ "x-request-id": ["req_aaaaaaaa", "req_bbbbbbbb"] })).toEqual({});
  });
});
