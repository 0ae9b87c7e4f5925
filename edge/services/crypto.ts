/**
 * Secrets at rest (host tokens, envd access tokens) are sealed with AES-256-GCM through Web Crypto,
 * which Node and Workers both have. Sealed form: `v1.<base64url iv>.<base64url ciphertext+tag>`.
 */
export interface SecretBox {
  seal(plaintext: string): Promise<string>;
  open(sealed: string): Promise<string>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Base64url without padding. */
export function toBase64Url(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Inverse of `toBase64Url`. */
export function fromBase64Url(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

function hexToBytes(hex: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** How many opened secrets a SecretBox remembers. */
const openedCacheSize = 1024;

/**
 * Creates a SecretBox from a 32-byte key given as 64 hex characters. `open` remembers the last
 * `openedCacheSize` plaintexts by sealed form: the same host token is opened on every exec and file
 * call, and each Web Crypto decrypt is a round trip through a thread pool. A sealed form only ever
 * opens to one plaintext (a fresh IV per seal), so the cache cannot answer wrongly; a changed secret
 * is a new sealed form.
 */
export async function createSecretBox(keyHex: string): Promise<SecretBox> {
  if (!/^[0-9a-fA-F]{64}$/.test(keyHex)) throw new Error("encryption key must be 64 hex characters");
  const key = await crypto.subtle.importKey("raw", hexToBytes(keyHex), "AES-GCM", false, ["encrypt", "decrypt"]);
  const opened = new Map<string, string>();
  const decrypt = async (sealed: string): Promise<string> => {
    const [version, iv, ct] = sealed.split(".");
    if (version !== "v1" || iv === undefined || ct === undefined) throw new Error("unknown sealed-secret format");
    const pt = await crypto.subtle.decrypt({ name: "AES-GCM", iv: fromBase64Url(iv) }, key, fromBase64Url(ct));
    return decoder.decode(pt);
  };
  return {
    async seal(plaintext) {
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, encoder.encode(plaintext)));
      return `v1.${toBase64Url(iv)}.${toBase64Url(ct)}`;
    },
    async open(sealed) {
      const known = opened.get(sealed);
      if (known !== undefined) return known;
      const plaintext = await decrypt(sealed);
      if (opened.size >= openedCacheSize) {
        const oldest = opened.keys().next();
        if (!oldest.done) opened.delete(oldest.value);
      }
      opened.set(sealed, plaintext);
      return plaintext;
    },
  };
}

/** Lower-case hex SHA-256 of a string. */
export async function sha256Hex(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
  let hex = "";
  for (const b of digest) hex += b.toString(16).padStart(2, "0");
  return hex;
}
