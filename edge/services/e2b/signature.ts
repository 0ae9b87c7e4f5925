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

/**
 * The `v1_` signature the E2B SDKs put in `/files` URLs and envd checks: unpadded standard base64
 * of SHA-256 over `path:operation:username:token[:expiration]`. The edge recomputes it to find which
 * sandbox a signed URL without routing headers belongs to; envd still verifies it (and its expiry).
 */
export async function envdFileSignature(input: FileSignatureInput): Promise<string> {
  const parts = [input.path, input.operation, input.username, input.accessToken];
  if (input.expiration !== undefined) parts.push(input.expiration);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(parts.join(":"))));
  let binary = "";
  for (const byte of digest) binary += String.fromCharCode(byte);
  return `v1_${btoa(binary).replace(/=+$/, "")}`;
}

/** Compares two strings in time that depends only on their length. */
export function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
