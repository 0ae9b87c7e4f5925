import { describe, expect, it } from "vitest";
import { classifyTraffic, hostName, isEnvdInternalRoute, normalizedPath, splitRequestUrl } from "./routing.js";

const req = (url: string, headers: Record<string, string> = {}, method = "GET") => ({
  method,
  url,
  headers: new Headers(headers),
});

describe("classifyTraffic", () => {
  it("routes by E2B headers on any host", () => {
    expect(
      classifyTraffic(
        req("http://api.example.com/process.Process/Start", {
          "E2b-Sandbox-Id": "abcdefghij0123456789",
          "E2b-Sandbox-Port": "49983",
        }),
      ),
    ).toEqual({ kind: "sandbox", sandboxId: "abcdefghij0123456789", port: 49983, via: "headers" });
  });

  it("routes by a <port>-<id>.<domain> Host, with or without a port, in any case", () => {
    expect(classifyTraffic(req("http://x/", { host: "8000-abcdefghij0123456789.localhost:3000" }))).toEqual({
      kind: "sandbox",
      sandboxId: "abcdefghij0123456789",
      port: 8000,
      via: "host",
    });
    expect(classifyTraffic(req("http://x/", { host: "49983-ABCDEFGHIJ0123456789.Sandboxes.Example.com" }))).toEqual({
      kind: "sandbox",
      sandboxId: "abcdefghij0123456789",
      port: 49983,
      via: "host",
    });
  });

  it("rejects bad ports and ids in headers or hosts", () => {
    const id = "abcdefghij0123456789";
    expect(classifyTraffic(req("http://x/", { "e2b-sandbox-id": id }))).toEqual({
      kind: "bad",
      message: "invalid sandbox port",
    });
    expect(classifyTraffic(req("http://x/", { "e2b-sandbox-id": id, "e2b-sandbox-port": "0" }))?.kind).toBe("bad");
    expect(classifyTraffic(req("http://x/", { "e2b-sandbox-id": id, "e2b-sandbox-port": "65536" }))?.kind).toBe("bad");
    expect(classifyTraffic(req("http://x/", { "e2b-sandbox-id": id, "e2b-sandbox-port": "80a" }))?.kind).toBe("bad");
    expect(classifyTraffic(req("http://x/", { "e2b-sandbox-port": "80" }))).toEqual({
      kind: "bad",
      message: "invalid sandbox id",
    });
    expect(classifyTraffic(req("http://x/", { "e2b-sandbox-id": "../etc", "e2b-sandbox-port": "80" }))?.kind).toBe(
      "bad",
    );
    expect(classifyTraffic(req("http://x/", { host: "99999-abcdefghij0123456789.example.com" }))?.kind).toBe("bad");
  });

  it("recognises signed /files URLs without routing, keeping the expiration verbatim", () => {
    expect(
      classifyTraffic(
        req(
          "http://localhost:3000/files?path=%2Fhome%2Fuser%2Fa+b.txt&username=user&signature=v1_abc&signature_expiration=1700000000",
        ),
      ),
    ).toEqual({
      kind: "signed-files",
      operation: "read",
      path: "/home/user/a b.txt",
      username: "user",
      signature: "v1_abc",
      expiration: "1700000000",
    });
    expect(classifyTraffic(req("http://localhost/files?path=x&signature=v1_a", {}, "POST"))).toMatchObject({
      operation: "write",
      username: "",
    });
  });

  it("leaves API calls alone", () => {
    expect(classifyTraffic(req("http://localhost:3000/v2/sandboxes", { host: "localhost:3000" }))).toBeUndefined();
    expect(classifyTraffic(req("http://api.example.com/files?path=x", { host: "api.example.com" }))).toBeUndefined();
    expect(classifyTraffic(req("http://localhost/files?signature=v1_a", {}, "DELETE"))).toBeUndefined();
    expect(classifyTraffic(req("http://localhost/", { host: "3000-short.example.com" }))).toMatchObject({
      kind: "sandbox",
    });
    expect(classifyTraffic(req("http://localhost/", { host: "api-3000.example.com" }))).toBeUndefined();
  });
});

describe("splitRequestUrl", () => {
  it("splits path and query without parsing the host", () => {
    expect(splitRequestUrl("http://8000-abc.127.0.0.1:3000/a/b?x=1#frag")).toEqual({
      pathname: "/a/b",
      search: "?x=1",
    });
    expect(splitRequestUrl("http://host")).toEqual({ pathname: "/", search: "" });
    expect(splitRequestUrl("/files?path=a")).toEqual({ pathname: "/files", search: "?path=a" });
  });
});

describe("hostName", () => {
  it("drops the port and lower-cases", () => {
    expect(hostName("Example.COM:8080")).toBe("example.com");
    expect(hostName("[::1]:3000")).toBe("[::1]");
    expect(hostName("localhost")).toBe("localhost");
  });
});

describe("isEnvdInternalRoute", () => {
  it("refuses envd's internal routes however the path is spelled, on envd's port only", () => {
    for (const path of ["/init", "/init/", "//init", "/freeze", "/unfreeze", "/fsfreeze", "/fsthaw", "/collapse"]) {
      expect(isEnvdInternalRoute(49983, path), path).toBe(true);
    }
    expect(isEnvdInternalRoute(49983, "/UPGRADE")).toBe(true);
    expect(isEnvdInternalRoute(49983, "/files")).toBe(false);
    expect(isEnvdInternalRoute(49983, "/health")).toBe(false);
    expect(isEnvdInternalRoute(8000, "/init")).toBe(false);
  });
});

describe("normalizedPath", () => {
  it("resolves dot segments in every spelling, never above the root", () => {
    expect(normalizedPath("/files/../init", "")).toEqual({ pathname: "/init", search: "" });
    expect(normalizedPath("/x/%2e%2e/init", "?a=1")).toEqual({ pathname: "/init", search: "?a=1" });
    expect(normalizedPath("/x/%2E%2E/%2e/init", "")?.pathname).toBe("/init");
    expect(normalizedPath("/x\\..\\init", "")?.pathname).toBe("/init");
    expect(normalizedPath("/../../../metrics", "")?.pathname).toBe("/metrics");
    expect(normalizedPath("/a%2Fb/c.txt", "")?.pathname).toBe("/a%2Fb/c.txt");
    expect(normalizedPath("*", "")).toBeUndefined();
  });
});
