import { createHash, timingSafeEqual } from "node:crypto";

/** The 401 message for a request without the right access token (E2B's exact text). */
export const UNAUTHORIZED_MESSAGE =
  "unauthorized access, please provide a valid access token or method signing if supported";

/** Routes reachable without `X-Access-Token` even when a token is set (method + path). */
const OPEN_ROUTES = new Set(["GET /health", "GET /files", "POST /files", "POST /init"]);

/** Whether a route is open without the access token. `/files` checks signatures itself. */
export function isOpenRoute(method: string, path: string): boolean {
  return OPEN_ROUTES.has(`${method} ${path}`);
}

/** Constant-time string equality. */
export function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * The `v1_` signature E2B's SDK puts in file URLs: base64(sha256("path:operation:username:token[:expiry]"))
 * without `=` padding. An empty username means the default user.
 */
export function fileSignature(
  path: string,
  operation: "read" | "write",
  username: string,
  token: string,
  expiresUnix?: number,
): string {
  const parts = [path, operation, username, token];
  if (expiresUnix !== undefined) parts.push(String(expiresUnix));
  return `v1_${createHash("sha256").update(parts.join(":")).digest("base64").replace(/=+$/, "")}`;
}

/** Query and header inputs of a `/files` authorization check. */
export interface SigningInput {
  token: string | undefined;
  headerToken: string | undefined;
  signature: string | undefined;
  signatureExpiration: string | undefined;
  username: string | undefined;
  path: string;
  operation: "read" | "write";
  nowUnix: number;
}

/**
 * Checks a `/files` request as E2B's envd does; returns the 401 message, or undefined when allowed.
 * No token set → allowed. A token header must match. Otherwise a signature must match, and an
 * expiry, when given, must not be in the past.
 */
export function checkFileSigning(input: SigningInput): string | undefined {
  if (!input.token) return undefined;
  if (input.headerToken) {
    return safeEqual(input.headerToken, input.token) ? undefined : "access token present in header but does not match";
  }
  if (input.signature === undefined) return "missing signature query parameter";
  let expires: number | undefined;
  if (input.signatureExpiration !== undefined) {
    expires = Number(input.signatureExpiration);
    if (!Number.isSafeInteger(expires)) return "invalid signature";
  }
  const expected = fileSignature(input.path, input.operation, input.username ?? "", input.token, expires);
  if (!safeEqual(expected, input.signature)) return "invalid signature";
  if (expires !== undefined && expires < input.nowUnix) return "signature is already expired";
  return undefined;
}

/** Username from `Authorization: Basic base64("name:")`; undefined when absent or not Basic. */
export function basicAuthUsername(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  const match = /^Basic\s+(.+)$/i.exec(header.trim());
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon < 0 ? decoded : decoded.slice(0, colon);
}
