import { sha256 } from "@noble/hashes/sha2.js";

/** Which envd `/files` operation a signature allows. */
export type FileOperation = "read" | "write";

/** What an envd file-URL signature covers. */
export interface FileSignatureInput {
  path: string;
  operation: FileOperation;
  /** The `username` query parameter; empty means envd's default user. */
  username: string;
  accessToken: string;
  /** The `signature_expiration` query parameter verbatim (unix seconds), when present. */
  expiration?: string;
}

const encoder = new TextEncoder();

/** Unpadded standard base64 of a SHA-256 digest (32 bytes, so a short loop is fine). */
function digestBase64(digest: Uint8Array): string {
  let binary = "";
  for (const byte of digest) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/=+$/, "");
}

/**
 * The `v1_` signature the E2B SDKs put in `/files` URLs and envd checks: unpadded standard base64
 * of SHA-256 over `path:operation:username:token[:expiration]`. Synchronous (a JS SHA-256, no Web
 * Crypto round trip through a thread pool) because the edge computes it once per live sandbox to
 * route a signed URL that names none: ~5 µs here against ~65 µs for `crypto.subtle.digest`.
 */
export function envdFileSignatureSync(input: FileSignatureInput): string {
  const parts = [input.path, input.operation, input.username, input.accessToken];
  if (input.expiration !== undefined) parts.push(input.expiration);
  return `v1_${digestBase64(sha256(encoder.encode(parts.join(":"))))}`;
}

/** `envdFileSignatureSync` as a promise, for callers that await it. */
export async function envdFileSignature(input: FileSignatureInput): Promise<string> {
  return envdFileSignatureSync(input);
}

/** Compares two strings in time that depends only on their length. */
export function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
