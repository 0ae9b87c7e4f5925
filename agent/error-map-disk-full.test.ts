import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { toConnectError } from "./error-map.js";
import { AgentError, isHostDiskFull } from "./errors.js";
import { createLogger } from "./logger.js";

// A full host disk is a capacity limit, not an agent bug: RESOURCE_EXHAUSTED / HOST_DISK_FULL.

const logged: string[] = [];
const logger = createLogger("debug", (line) => logged.push(line));

const enospc = () => Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
const execFailure = () =>
  Object.assign(new Error("cp --sparse=always a b: exit code 1"), {
    name: "ExecError",
    stderr: "cp: error writing '/var/lib/wrenn/sandboxes/x/disk.ext4': No space left on device",
  });

describe("isHostDiskFull", () => {
  it("finds ENOSPC/EDQUOT and the tools' wording anywhere in the chain", () => {
    expect(isHostDiskFull(enospc())).toBe(true);
    expect(isHostDiskFull(Object.assign(new Error("x"), { code: "EDQUOT" }))).toBe(true);
    expect(isHostDiskFull(execFailure())).toBe(true);
    expect(isHostDiskFull(new Error("mkfs.ext4: No space left on device while writing out"))).toBe(true);
    expect(isHostDiskFull(new AgentError("INTERNAL", "CREATE_FAILED", "x", { cause: execFailure() }))).toBe(true);
    expect(isHostDiskFull(new AggregateError([new Error("a"), enospc()], "teardown failed"))).toBe(true);
    expect(isHostDiskFull(new Error("EACCES"))).toBe(false);
    expect(isHostDiskFull(Object.assign(new Error("x"), { code: "EIO" }))).toBe(false);
    expect(isHostDiskFull(undefined)).toBe(false);
  });

  it("stops on a cycle", () => {
    const a: Error & { cause?: unknown } = new Error("a");
    a.cause = a;
    expect(isHostDiskFull(a)).toBe(false);
  });
});

describe("toConnectError on a full disk", () => {
  it("a create that failed for a full disk: ResourceExhausted, HOST_DISK_FULL, no host paths", () => {
    const err = new AgentError("INTERNAL", "CREATE_FAILED", "sandbox did not start: cp …", { cause: execFailure() });
    const mapped = toConnectError(err, logger);
    expect(mapped.code).toBe(Code.ResourceExhausted);
    expect(mapped.metadata.get("error-reason")).toBe("HOST_DISK_FULL");
    expect(mapped.rawMessage).toBe(
      "no space left on the host's disk: the sandbox was not created, and nothing of it is left on the host",
    );
    expect(mapped.rawMessage).not.toContain("/var/lib");
    expect(logged.join("\n")).toMatch(/the host's disk is full/);
  });

  it("an unwrapped ENOSPC (any operation) is ResourceExhausted too", () => {
    const mapped = toConnectError(enospc(), logger);
    expect([mapped.code, mapped.rawMessage]).toEqual([Code.ResourceExhausted, "no space left on the host's disk"]);
  });

  it("keeps domain codes other than INTERNAL, and envd's own errors (the guest's disk)", () => {
    const notFound = new AgentError("NOT_FOUND", "SANDBOX_NOT_FOUND", "No space left on device", { cause: enospc() });
    expect(toConnectError(notFound, logger).code).toBe(Code.NotFound);
    const guest = new ConnectError("write /home/user/x: no space left on device", Code.ResourceExhausted);
    const mapped = toConnectError(guest, logger);
    expect(mapped.metadata.get("error-reason")).toBe("ENVD_ERROR");
    expect(mapped.rawMessage).toMatch(/^envd: /);
  });

  it("other internal failures stay generic", () => {
    const mapped = toConnectError(new Error("boom"), logger);
    expect([mapped.code, mapped.rawMessage]).toEqual([Code.Internal, "internal error"]);
  });
});
