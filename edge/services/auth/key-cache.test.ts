import { describe, expect, it } from "vitest";
import { createApiKeyCache } from "./key-cache.js";

const principal = { teamId: "team_a", keyId: "key_a", isAdmin: false, scopes: ["sandboxes:read"] };

describe("ApiKeyCache", () => {
  it("returns entries until they expire", () => {
    const cache = createApiKeyCache(1000);
    cache.set("h", principal, 0, cache.generation());
    expect(cache.get("h", 999)).toEqual(principal);
    expect(cache.get("h", 1000)).toBeUndefined();
  });

  it("forgets a revoked key at once", () => {
    const cache = createApiKeyCache(1000);
    cache.set("h1", principal, 0, cache.generation());
    cache.set("h2", { ...principal, keyId: "key_b" }, 0, cache.generation());
    cache.forgetKey("key_a");
    expect(cache.get("h1", 1)).toBeUndefined();
    expect(cache.get("h2", 1)?.keyId).toBe("key_b");
  });

  it("does not cache a lookup that raced a revoke", () => {
    const cache = createApiKeyCache(1000);
    const before = cache.generation();
    cache.forgetKey("key_a");
    cache.set("h", principal, 0, before);
    expect(cache.get("h", 1)).toBeUndefined();
    cache.set("h", principal, 0, cache.generation());
    expect(cache.get("h", 1)).toEqual(principal);
  });

  it("stays bounded", () => {
    const cache = createApiKeyCache(1000, 2);
    cache.set("a", principal, 0, cache.generation());
    cache.set("b", principal, 0, cache.generation());
    cache.set("c", principal, 0, cache.generation());
    expect(cache.get("a", 1)).toBeUndefined();
    expect(cache.get("c", 1)).toBeDefined();
  });
});
