import { describe, expect, it } from "vitest";
import { createLogger, type LogLevel, type LogThreshold, noopLogger } from "./log.js";

function capture(level: LogThreshold = "debug") {
  const lines: Array<{ line: string; level: LogLevel }> = [];
  const logger = createLogger({
    level,
    sink: (line, at) => lines.push({ line, level: at }),
    now: () => new Date("2026-12-07T12:00:00.000Z"),
  });
  const records = () => lines.map((l) => JSON.parse(l.line) as Record<string, unknown>);
  return { logger, lines, records };
}

describe("the shared logger", () => {
  it("writes one JSON object per line with time, level and msg first", () => {
    const { logger, lines, records } = capture();
    logger.info("sandbox created", { sandboxId: "sbx_1", ms: 12 });
    expect(lines).toHaveLength(1);
    expect(lines[0]?.line).not.toContain("\n");
    expect(lines[0]?.level).toBe("info");
    expect(records()[0]).toEqual({
      time: "2026-12-07T12:00:00.000Z",
      level: "info",
      msg: "sandbox created",
      sandboxId: "sbx_1",
      ms: 12,
    });
    expect(Object.keys(records()[0] ?? {}).slice(0, 3)).toEqual(["time", "level", "msg"]);
  });

  it("binds component, requestId and sandboxId with child() onto every later line", () => {
    const { logger, records } = capture();
    const request = logger.child({ component: "edge" }).child({ requestId: "req_abc" });
    const sandbox = request.child({ sandboxId: "sbx_9" });
    sandbox.warn("pause failed");
    request.info("done", { status: 200 });
    sandbox.child({ sandboxId: "sbx_10" }).debug("replaced");
    sandbox.error("call-site field wins", { component: "reaper" });
    expect(records()).toEqual([
      expect.objectContaining({ component: "edge", requestId: "req_abc", sandboxId: "sbx_9", msg: "pause failed" }),
      expect.objectContaining({ component: "edge", requestId: "req_abc", status: 200 }),
      expect.objectContaining({ requestId: "req_abc", sandboxId: "sbx_10" }),
      expect.objectContaining({ component: "reaper", requestId: "req_abc", sandboxId: "sbx_9" }),
    ]);
    expect(records()[1]).not.toHaveProperty("sandboxId");
  });

  it("adds the fields of the work in progress, under bound and call-site fields", () => {
    const lines: string[] = [];
    let current: Record<string, unknown> | undefined = { requestId: "req_from_context" };
    const logger = createLogger({ sink: (line) => lines.push(line), context: () => current });
    logger.info("in a request");
    logger.child({ requestId: "req_bound" }).info("bound wins");
    current = undefined;
    logger.info("outside any request");
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records.map((r) => r.requestId)).toEqual(["req_from_context", "req_bound", undefined]);
  });

  it("does not let a field replace time, level or msg", () => {
    const { logger, records } = capture();
    logger.child({ level: "debug" }).error("real", { msg: "forged", time: "never" });
    expect(records()[0]).toMatchObject({ level: "error", msg: "real", time: "2026-12-07T12:00:00.000Z" });
  });

  it("writes errors as { name, message, stack, cause } in any field", () => {
    const { logger, records } = capture();
    const cause = new RangeError("disk full");
    const err = new TypeError("write failed", { cause });
    logger.error("upload failed", { err, other: new Error("second") });
    const record = records()[0] as { err: Record<string, unknown>; other: Record<string, unknown> };
    expect(record.err).toMatchObject({ name: "TypeError", message: "write failed" });
    expect(record.err.stack).toMatch(/TypeError: write failed/);
    expect(record.err.cause).toMatchObject({ name: "RangeError", message: "disk full" });
    expect(record.other).toMatchObject({ name: "Error", message: "second" });
  });

  it("drops lines below its level; silent drops all", () => {
    const warn = capture("warn");
    warn.logger.debug("d");
    warn.logger.info("i");
    warn.logger.warn("w");
    warn.logger.error("e");
    expect(warn.records().map((r) => r.level)).toEqual(["warn", "error"]);
    const silent = capture("silent");
    silent.logger.error("e");
    expect(silent.lines).toHaveLength(0);
    const info = capture("info");
    info.logger.child({ requestId: "r" }).debug("a child keeps its parent's level");
    expect(info.lines).toHaveLength(0);
  });

  it("keeps a line and its ids when a field cannot be written as JSON", () => {
    const { logger, records } = capture();
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    logger.child({ requestId: "req_1", sandboxId: "sbx_1" }).warn("odd", { cyclic });
    expect(records()[0]).toMatchObject({ level: "warn", msg: "odd", requestId: "req_1", sandboxId: "sbx_1" });
    expect(records()[0]).toHaveProperty("logError");
  });

  it("noopLogger writes nothing and stays itself through child()", () => {
    expect(noopLogger.child({ requestId: "x" })).toBe(noopLogger);
    expect(() => noopLogger.error("nothing", { err: new Error("x") })).not.toThrow();
  });
});
