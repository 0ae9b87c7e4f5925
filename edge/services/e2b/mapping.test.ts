import { describe, expect, it } from "vitest";
import { fileSignature } from "../../../agent/envd/auth.js";
import { BadRequestError } from "../errors.js";
import { createInputFromE2b, networkUpdateFromE2b } from "./create-input.js";
import { e2bState, parseE2bMetadataQuery, parseE2bStates, wrennTemplate } from "./mapping.js";
import { envdFileSignature } from "./signature.js";

describe("E2B mapping", () => {
  it("shows only running and paused, and hides gone sandboxes", () => {
    expect(e2bState("running")).toBe("running");
    expect(e2bState("resuming")).toBe("running");
    expect(e2bState("pausing")).toBe("paused");
    expect(e2bState("stopped")).toBeUndefined();
    expect(e2bState("error")).toBeUndefined();
    expect(e2bState("pending")).toBeUndefined();
  });

  it("parses state filters, form style or repeated, and refuses unknown states", () => {
    expect(parseE2bStates([])).toEqual(expect.arrayContaining(["running", "paused"]));
    expect(parseE2bStates(["paused"])).toEqual(["pausing", "paused"]);
    expect(parseE2bStates(["running,paused"]).sort()).toEqual(parseE2bStates(["running", "paused"]).sort());
    expect(() => parseE2bStates(["killed"])).toThrow(BadRequestError);
  });

  it("decodes the SDK's doubly encoded metadata query", () => {
    const sdkQuery = new URLSearchParams({
      [encodeURIComponent("my key")]: encodeURIComponent("a=b&c"),
      plain: "v",
    }).toString();
    expect(parseE2bMetadataQuery(sdkQuery)).toEqual({ "my key": "a=b&c", plain: "v" });
    expect(parseE2bMetadataQuery(undefined)).toEqual({});
    expect(() => parseE2bMetadataQuery("k=%E0%A4%A")).toThrow(BadRequestError);
  });

  it("maps templates: base is minimal, tags are dropped, bad names refused", () => {
    expect(wrennTemplate("base")).toBe("minimal");
    expect(wrennTemplate("python:latest")).toBe("python");
    expect(wrennTemplate("code-interpreter-v1")).toBe("code-interpreter");
    expect(() => wrennTemplate("../etc")).toThrow(BadRequestError);
  });

  it("maps create requests with E2B's defaults and rules", () => {
    expect(createInputFromE2b({ templateID: "base" }, 300)).toMatchObject({
      template: "minimal",
      timeoutSec: 300,
      onTimeout: "kill",
      autoResume: false,
      envVars: {},
      metadata: {},
    });
    expect(
      createInputFromE2b({ templateID: "base", autoPause: true, autoResume: { enabled: true } }, 15),
    ).toMatchObject({ timeoutSec: 15, onTimeout: "pause", autoResume: true });
    expect(createInputFromE2b({ templateID: "base", allow_internet_access: false }, 15).internetAccess).toBe(false);
    expect(
      createInputFromE2b({ templateID: "base", network: { allowOut: ["1.2.3.4"], denyOut: ["0.0.0.0/0"] } }, 15)
        .network,
    ).toEqual({ allowOut: ["1.2.3.4"], denyOut: ["0.0.0.0/0"] });
    expect(createInputFromE2b({ templateID: "base", network: { allowPublicTraffic: true } }, 15).network).toEqual({
      allowOut: [],
      denyOut: [],
      allowPublicTraffic: true,
    });
    expect(createInputFromE2b({ templateID: "base", network: {} }, 15).network).toBeUndefined();
    expect(networkUpdateFromE2b({ denyOut: ["0.0.0.0/0"], allow_internet_access: true })).toEqual({
      allowOut: [],
      denyOut: ["0.0.0.0/0"],
      internetAccess: true,
    });
    expect(() => networkUpdateFromE2b({ rules: { "api.example.com": [{}] } })).toThrow(/not supported by Wrenn/);
    for (const bad of [
      { templateID: "base", timeout: 0 },
      { templateID: "base", timeout: 31 * 86_400 },
      { templateID: "base", autoPauseMemory: false },
      { templateID: "base", autoPause: true, autoPauseMemory: false, autoResume: { enabled: true } },
      { templateID: "base", network: { egressProxy: { address: "proxy:1080" } } },
      { templateID: "base", network: { rules: {} } },
      { templateID: "base", volumeMounts: [{ name: "v", path: "/data" }] },
      { templateID: "base", iam: { tokens: {} } },
    ]) {
      expect(() => createInputFromE2b(bad, 300), JSON.stringify(bad)).toThrow(BadRequestError);
    }
  });

  it("signs /files URLs exactly as envd verifies them", async () => {
    const token = "tok_0123456789";
    expect(
      await envdFileSignature({ path: "/home/user/a.txt", operation: "read", username: "", accessToken: token }),
    ).toBe(fileSignature("/home/user/a.txt", "read", "", token));
    expect(
      await envdFileSignature({
        path: "x",
        operation: "write",
        username: "root",
        accessToken: token,
        expiration: "1700000000",
      }),
    ).toBe(fileSignature("x", "write", "root", token, 1_700_000_000));
  });
});
