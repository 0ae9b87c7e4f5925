/**
 * Bounded reads of bodies a guest controls (envd answers through the agent's proxy). `res.text()`
 * and `res.json()` read until the sender stops, so a guest answering a gigabyte would have the edge
 * hold a gigabyte. These stop at a limit and cancel the rest. Web streams only, so they run on Workers.
 */

/** A body was longer than the reader allows. */
export class BodyTooLargeError extends Error {
  readonly limit: number;

  constructor(limit: number) {
    super(`the answer is larger than ${limit} bytes`);
    this.name = "BodyTooLargeError";
    this.limit = limit;
  }
}

function declaredLength(res: Response): number | undefined {
  const header = res.headers.get("content-length");
  if (header === null || !/^[0-9]+$/.test(header.trim())) return undefined;
  return Number(header);
}

async function collect(res: Response, maxBytes: number, onOverflow: "throw" | "truncate"): Promise<Uint8Array> {
  const length = declaredLength(res);
  if (length !== undefined && length > maxBytes && onOverflow === "throw") {
    await res.body?.cancel().catch(() => {});
    throw new BodyTooLargeError(maxBytes);
  }
  if (res.body === null) return new Uint8Array(0);
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const room = maxBytes - total;
      if (value.length > room) {
        if (onOverflow === "throw") throw new BodyTooLargeError(maxBytes);
        parts.push(value.subarray(0, room));
        total += room;
        break;
      }
      parts.push(value);
      total += value.length;
    }
  } finally {
    // Stops the transfer (and the agent's upstream connection) at the limit instead of draining it.
    reader.cancel().catch(() => {});
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** The whole body as bytes; over `maxBytes` cancels the transfer and throws BodyTooLargeError. */
export function readBytesLimited(res: Response, maxBytes: number): Promise<Uint8Array> {
  return collect(res, maxBytes, "throw");
}

/** The whole body as UTF-8 text; over `maxBytes` cancels the transfer and throws BodyTooLargeError. */
export async function readTextLimited(res: Response, maxBytes: number): Promise<string> {
  return new TextDecoder().decode(await collect(res, maxBytes, "throw"));
}

/** The body parsed as JSON; over `maxBytes` throws BodyTooLargeError, bad JSON a SyntaxError. */
export async function readJsonLimited(res: Response, maxBytes: number): Promise<unknown> {
  return JSON.parse(await readTextLimited(res, maxBytes));
}

/** The first `maxBytes` of the body as text (for an error message); the rest is cancelled, not read. */
export async function readTextPrefix(res: Response, maxBytes: number): Promise<string> {
  return new TextDecoder().decode(await collect(res, maxBytes, "truncate"));
}
