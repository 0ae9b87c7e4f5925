const lowerAlnum = "abcdefghijklmnopqrstuvwxyz0123456789";
const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** `length` characters drawn uniformly from `alphabet` (rejection sampling, so no modulo bias). */
export function randomString(length: number, alphabet: string): string {
  const limit = 256 - (256 % alphabet.length);
  let out = "";
  while (out.length < length) {
    for (const b of crypto.getRandomValues(new Uint8Array(length * 2))) {
      if (b < limit) out += alphabet[b % alphabet.length];
      if (out.length === length) break;
    }
  }
  return out;
}

/** Sandbox ids: 20 characters of [a-z0-9], as E2B's, so `<port>-<id>.<domain>` parses. */
export function newSandboxId(): string {
  return randomString(20, lowerAlnum);
}

/** Pattern a sandbox id must match. */
export const sandboxIdPattern = /^[a-z0-9]{20}$/;

/** Prefixed ids of other entities, e.g. `host_…`, `key_…`, `team_…`. */
export function newId(prefix: "host" | "key" | "team"): string {
  return `${prefix}_${randomString(16, lowerAlnum)}`;
}

/**
 * API key secrets: `e2b_` and 64 hex characters (256 bits), the form E2B's SDKs check client-side
 * (`^e2b_[0-9a-f]+$`), so today's and future SDKs accept them. Keys made before (`wrn_…`) still work:
 * a key is found by its hash, never by its form.
 */
export function newApiKeySecret(): string {
  return `e2b_${randomString(64, "0123456789abcdef")}`;
}

/** Tokens envd requires in `X-Access-Token`. */
export function newEnvdAccessToken(): string {
  return randomString(40, alnum);
}
