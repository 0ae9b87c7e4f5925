import { describe, expect, it } from "vitest";
import { fromBase64Url } from "../crypto.js";
import {
  checkPasswordPolicy,
  constantTimeEqual,
  hashPassword,
  needsRehash,
  parsePasswordHash,
  verifyPassword,
} from "./password.js";

const encoder = new TextEncoder();

async function plainPbkdf2(password: string, salt: Uint8Array<ArrayBuffer>, iterations: number): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(password), "PBKDF2", false, ["deriveBits"]);
  return new Uint8Array(
    await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, key, 256),
  );
}

describe("password hashes", () => {
  it("up to 100,000 iterations the digest is plain PBKDF2-HMAC-SHA256 (RFC 8018), so other tools can check it", async () => {
    const stored = await hashPassword("correct horse battery staple", 5_000);
    const parsed = parsePasswordHash(stored);
    expect(parsed).toMatchObject({ iterations: 5_000, perCall: 5_000 });
    const [, , salt = "", digest = ""] = stored.split("$");
    expect(await plainPbkdf2("correct horse battery staple", fromBase64Url(salt), 5_000)).toEqual(
      fromBase64Url(digest),
    );
  });

  it("above 100,000 iterations the calls chain (each at most 100,000, as Workers allow), and the result verifies", async () => {
    const stored = await hashPassword("correct horse battery staple", 250_000);
    expect(stored).toMatch(/^pbkdf2-sha256\$i=250000,c=100000\$/);
    const [, , salt = "", digest = ""] = stored.split("$");
    const s = fromBase64Url(salt);
    // 100,000 + 100,000 + 50,000, each call's output the next call's password.
    let material: Uint8Array<ArrayBuffer> = encoder.encode("correct horse battery staple");
    for (const n of [100_000, 100_000, 50_000]) {
      const key = await crypto.subtle.importKey("raw", material, "PBKDF2", false, ["deriveBits"]);
      material = new Uint8Array(
        await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: s, iterations: n }, key, 256),
      );
    }
    expect(material).toEqual(fromBase64Url(digest));
    expect(await verifyPassword("correct horse battery staple", stored)).toBe(true);
    expect(await verifyPassword("correct horse battery stapler", stored)).toBe(false);
  });

  it("says when a hash is below the current factor", async () => {
    const weak = await hashPassword("correct horse battery staple", 10_000);
    expect(needsRehash(weak, 600_000)).toBe(true);
    expect(needsRehash(weak, 10_000)).toBe(false);
    expect(needsRehash("md5$whatever", 600_000)).toBe(true);
  });

  it("never matches a stored value it cannot read, nor one with an absurd work factor", async () => {
    expect(await verifyPassword("x", "")).toBe(false);
    expect(await verifyPassword("x", "pbkdf2-sha256$i=1,c=1$AAAA$AAAA")).toBe(false);
    expect(parsePasswordHash("pbkdf2-sha256$i=999999999,c=100000$AAAA$AAAA")).toBeNull();
    expect(parsePasswordHash("pbkdf2-sha256$i=600000,c=200000$AAAA$AAAA")).toBeNull();
  });

  it("compares bytes whatever their lengths", () => {
    expect(constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2]))).toBe(true);
    expect(constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false);
    expect(constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2, 0]))).toBe(false);
  });

  it("accepts 10 to 256 characters, counted as code points", () => {
    expect(() => checkPasswordPolicy("123456789")).toThrow(/10 to 256/);
    expect(() => checkPasswordPolicy("1234567890")).not.toThrow();
    expect(() => checkPasswordPolicy("🔑".repeat(10))).not.toThrow();
    expect(() => checkPasswordPolicy("a".repeat(256))).not.toThrow();
    expect(() => checkPasswordPolicy("a".repeat(257))).toThrow();
  });
});
