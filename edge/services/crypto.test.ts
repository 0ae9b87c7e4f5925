import { describe, expect, it } from "vitest";
import { createSecretBox, fromBase64Url, sha256Hex, toBase64Url } from "./crypto.js";
import { newApiKeySecret, newId, newSandboxId } from "./ids.js";

const key = "ab".repeat(32);

describe("SecretBox", () => {
  it("round-trips and never stores the plaintext", async () => {
    const box = await createSecretBox(key);
    const sealed = await box.seal("host-token-123");
    expect(sealed.startsWith("v1.")).toBe(true);
    expect(sealed).not.toContain("host-token-123");
    expect(await box.open(sealed)).toBe("host-token-123");
  });

  it("opens a remembered secret the same way, and still refuses tampered forms of it", async () => {
    const box = await createSecretBox(key);
    const sealed = await box.seal("host-token-123");
    expect(await box.open(sealed)).toBe("host-token-123");
    expect(await box.open(sealed)).toBe("host-token-123");
    const parts = sealed.split(".");
    const ct = fromBase64Url(parts[2] ?? "");
    ct[0] = (ct[0] ?? 0) ^ 1;
    await expect(box.open(`${parts[0]}.${parts[1]}.${toBase64Url(ct)}`)).rejects.toThrow();
  });

  it("uses a fresh IV each time", async () => {
    const box = await createSecretBox(key);
    expect(await box.seal("same")).not.toBe(await box.seal("same"));
  });

  it("rejects tampered ciphertext and a wrong key", async () => {
    const box = await createSecretBox(key);
    const sealed = await box.seal("secret");
    const parts = sealed.split(".");
    const ct = fromBase64Url(parts[2] ?? "");
    ct[0] = (ct[0] ?? 0) ^ 1;
    await expect(box.open(`${parts[0]}.${parts[1]}.${toBase64Url(ct)}`)).rejects.toThrow();
    const other = await createSecretBox("cd".repeat(32));
    await expect(other.open(sealed)).rejects.toThrow();
  });

  it("refuses malformed keys", async () => {
    await expect(createSecretBox("short")).rejects.toThrow(/64 hex/);
  });
});

describe("ids and hashes", () => {
  it("makes 20-character [a-z0-9] sandbox ids and prefixed ids", () => {
    const ids = new Set(Array.from({ length: 1000 }, newSandboxId));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(id).toMatch(/^[a-z0-9]{20}$/);
    expect(newId("host")).toMatch(/^host_[a-z0-9]{16}$/);
    expect(newId("team")).toMatch(/^team_/);
    expect(newApiKeySecret()).toMatch(/^e2b_[0-9a-f]{64}$/);
  });

  it("hashes with SHA-256", async () => {
    expect(await sha256Hex("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });
});
