import { describe, expect, it } from "vitest";
import { parseProxyUrl } from "./proxy.js";
import { bearerMatches } from "./server.js";

describe("bearerMatches", () => {
  it("accepts only the exact bearer token", () => {
    expect(bearerMatches("Bearer s3cret-token-value", "s3cret-token-value")).toBe(true);
    expect(bearerMatches("Bearer s3cret-token-valuE", "s3cret-token-value")).toBe(false);
    expect(bearerMatches("s3cret-token-value", "s3cret-token-value")).toBe(false);
    expect(bearerMatches(undefined, "s3cret-token-value")).toBe(false);
    expect(bearerMatches("Bearer ", "")).toBe(false);
  });
});

describe("parseProxyUrl", () => {
  it("splits sandbox, port and the guest path with its query", () => {
    expect(parseProxyUrl("/proxy/abcdefghij0123456789/8080/a/b?x=1")).toEqual({
      sandboxId: "abcdefghij0123456789",
      port: 8080,
      path: "/a/b?x=1",
    });
    expect(parseProxyUrl("/proxy/abcdefghij0123456789/3000")).toEqual({
      sandboxId: "abcdefghij0123456789",
      port: 3000,
      path: "/",
    });
    expect(parseProxyUrl("/proxy/abcdefghij0123456789/3000?q")).toMatchObject({ path: "/?q" });
    expect(parseProxyUrl("/health")).toBeUndefined();
  });

  it("rejects bad ports", () => {
    for (const url of ["/proxy/x/0/", "/proxy/x/70000/", "/proxy/x/http/", "/proxy/x"]) {
      expect(parseProxyUrl(url)).toHaveProperty("code", "INVALID_ARGUMENT");
    }
  });
});
