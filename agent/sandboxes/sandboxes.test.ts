import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { CONNECT_CODE, toConnectError } from "../error-map.js";
import { AgentError } from "../errors.js";
import { noopLogger } from "../logger.js";
import { assertSandboxId, assertTemplateName } from "./ids.js";
import { KeyedLock, Semaphore } from "./lock.js";

describe("ids", () => {
  it("accepts 20 characters of [a-z0-9] only", () => {
    expect(() => assertSandboxId("abcdefghij0123456789")).not.toThrow();
    for (const bad of [
      "",
      "abc",
      "ABCDEFGHIJ0123456789",
      "abcdefghij012345678-",
      "abcdefghij01234567890",
      "../../../../etc/pass",
    ]) {
      expect(() => assertSandboxId(bad)).toThrow(AgentError);
    }
  });

  it("keeps template names to safe directory names", () => {
    expect(() => assertTemplateName("minimal")).not.toThrow();
    expect(() => assertTemplateName("python-3.11")).not.toThrow();
    for (const bad of ["", "..", "a/b", "../x", "x..y", "-x", "UPPER"])
      expect(() => assertTemplateName(bad)).toThrow(AgentError);
  });
});

describe("error table", () => {
  it("maps every domain code, with the reason as a header", () => {
    const err = toConnectError(new AgentError("RESOURCE_EXHAUSTED", "HOST_FULL", "full"), noopLogger);
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.metadata.get("error-reason")).toBe("HOST_FULL");
    expect(CONNECT_CODE.NOT_FOUND).toBe(Code.NotFound);
    expect(CONNECT_CODE.FAILED_PRECONDITION).toBe(Code.FailedPrecondition);
    expect(CONNECT_CODE.INVALID_ARGUMENT).toBe(Code.InvalidArgument);
    expect(CONNECT_CODE.UNAVAILABLE).toBe(Code.Unavailable);
  });

  it("keeps envd's codes and hides unknown errors", () => {
    const envd = toConnectError(new ConnectError("no such file", Code.NotFound), noopLogger);
    expect(envd.code).toBe(Code.NotFound);
    expect(envd.rawMessage).toBe("envd: no such file");
    const internal = toConnectError(new Error("SELECT * FROM secrets"), noopLogger);
    expect(internal.code).toBe(Code.Internal);
    expect(internal.rawMessage).not.toContain("secrets");
  });
});

describe("KeyedLock", () => {
  it("runs operations on one key one at a time, in order, even after a failure", async () => {
    const lock = new KeyedLock();
    const order: string[] = [];
    const slow = lock.run("a", async () => {
      await new Promise((r) => setTimeout(r, 30));
      order.push("a1");
      throw new Error("boom");
    });
    const next = lock.run("a", async () => {
      order.push("a2");
    });
    const other = lock.run("b", async () => {
      order.push("b1");
    });
    await expect(slow).rejects.toThrow("boom");
    await Promise.all([next, other]);
    expect(order).toEqual(["b1", "a1", "a2"]);
  });
});

describe("Semaphore", () => {
  it("never runs more than its size at once", async () => {
    const sem = new Semaphore(2);
    let running = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 7 }, () =>
        sem.run(async () => {
          running++;
          peak = Math.max(peak, running);
          await new Promise((r) => setTimeout(r, 5));
          running--;
        }),
      ),
    );
    expect(peak).toBe(2);
  });
});
