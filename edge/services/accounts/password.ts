import { fromBase64Url, toBase64Url } from "../crypto.js";
import { ServiceError } from "../errors.js";

/**
 * Password hashing with PBKDF2-HMAC-SHA256 through Web Crypto, which Node and Workers both have
 * (no native module, nothing from node:*). The stored form describes itself:
 *
 *   `pbkdf2-sha256$i=<iterations>,c=<per call>$<salt, base64url>$<digest, base64url>`
 *
 * Workers refuse a single PBKDF2 call of more than 100,000 iterations (workerd's limit, kept
 * since Workers had a 50 ms budget), so a work factor above that is reached by chaining calls:
 * the output of one call is the password of the next, with the same salt, `c` iterations each,
 * until `i` iterations are done. With `i <= c` this is plain PBKDF2. Chaining keeps the cost
 * sequential, so an attacker pays the same `i` HMAC iterations per guess.
 */
export const passwordHashAlgorithm = "pbkdf2-sha256";

/** The most iterations one Web Crypto PBKDF2 call may run on Workers. */
export const maxIterationsPerCall = 100_000;

/** Stored hashes with fewer iterations are refused (a forged or corrupt row must not weaken a login to nothing). */
const minIterations = 1_000;
/** Nor more (a corrupt row must not cost minutes of CPU per attempt). */
const maxIterations = 10_000_000;

/** Password length policy, in characters (code points). */
export const passwordPolicy = { minLength: 10, maxLength: 256 } as const;

const saltBytes = 16;
const digestBits = 256;
const encoder = new TextEncoder();

/** Throws BAD_REQUEST unless `password` fits the policy. */
export function checkPasswordPolicy(password: string): void {
  const length = [...password].length;
  if (length < passwordPolicy.minLength || length > passwordPolicy.maxLength) {
    throw new ServiceError(
      "BAD_REQUEST",
      `a password has ${passwordPolicy.minLength} to ${passwordPolicy.maxLength} characters`,
      { details: { password: `${passwordPolicy.minLength} to ${passwordPolicy.maxLength} characters` } },
    );
  }
}

async function derive(
  password: Uint8Array<ArrayBuffer>,
  salt: Uint8Array<ArrayBuffer>,
  iterations: number,
  perCall: number,
) {
  let material = password;
  let left = iterations;
  while (left > 0) {
    const n = Math.min(left, perCall);
    const key = await crypto.subtle.importKey("raw", material, "PBKDF2", false, ["deriveBits"]);
    material = new Uint8Array(
      await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations: n }, key, digestBits),
    );
    left -= n;
  }
  return material;
}

/** Hashes a password with a fresh salt and `iterations` (the edge's work factor). */
export async function hashPassword(password: string, iterations: number): Promise<string> {
  const perCall = Math.min(iterations, maxIterationsPerCall);
  const salt = crypto.getRandomValues(new Uint8Array(saltBytes));
  const digest = await derive(encoder.encode(password), salt, iterations, perCall);
  return `${passwordHashAlgorithm}$i=${iterations},c=${perCall}$${toBase64Url(salt)}$${toBase64Url(digest)}`;
}

interface ParsedHash {
  iterations: number;
  perCall: number;
  salt: Uint8Array<ArrayBuffer>;
  digest: Uint8Array<ArrayBuffer>;
}

/** Parses a stored hash; null when it is not one this code wrote. */
export function parsePasswordHash(stored: string): ParsedHash | null {
  const match = /^pbkdf2-sha256\$i=([0-9]{1,9}),c=([0-9]{1,9})\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/.exec(stored);
  if (!match) return null;
  const iterations = Number(match[1]);
  const perCall = Number(match[2]);
  if (iterations < minIterations || iterations > maxIterations) return null;
  if (perCall < 1 || perCall > maxIterationsPerCall) return null;
  return { iterations, perCall, salt: fromBase64Url(match[3] ?? ""), digest: fromBase64Url(match[4] ?? "") };
}

/** Compares two byte strings in time that depends only on their lengths. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/** Compares two strings (tokens) in time that depends only on their lengths. */
export function constantTimeEqualText(a: string, b: string): boolean {
  return constantTimeEqual(encoder.encode(a), encoder.encode(b));
}

/** Whether `password` matches `stored`; a stored value this code cannot read never matches. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parsed = parsePasswordHash(stored);
  if (!parsed) return false;
  const digest = await derive(encoder.encode(password), parsed.salt, parsed.iterations, parsed.perCall);
  return constantTimeEqual(digest, parsed.digest);
}

/** Whether a stored hash is weaker than the edge's current work factor (rehash it at the next sign-in). */
export function needsRehash(stored: string, iterations: number): boolean {
  const parsed = parsePasswordHash(stored);
  return !parsed || parsed.iterations < iterations || parsed.perCall !== Math.min(iterations, maxIterationsPerCall);
}

const dummySalt = new Uint8Array(saltBytes);

/**
 * Spends what a verification at `iterations` costs, for a sign-in with an unknown email, so that
 * answer takes as long as a wrong password does.
 */
export async function spendVerificationTime(password: string, iterations: number): Promise<void> {
  await derive(encoder.encode(password), dummySalt, iterations, Math.min(iterations, maxIterationsPerCall));
}
