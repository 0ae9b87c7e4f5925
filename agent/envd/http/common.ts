import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";

/** A request on either HTTP/1.1 or h2c; the handlers use only what both offer. */
export type EnvdRequest = IncomingMessage | Http2ServerRequest;
/** A response on either HTTP/1.1 or h2c. */
export type EnvdResponse = ServerResponse | Http2ServerResponse;

/** Writes E2B's error shape, `{"code": <status>, "message": "..."}`. */
export function jsonError(res: EnvdResponse, status: number, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ code: status, message });
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

/** Writes a JSON body with status 200 unless told otherwise. */
export function jsonReply(res: EnvdResponse, value: unknown, status = 200): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

/** The first value of a header, whatever the transport joined or split. */
export function header(req: EnvdRequest, name: string): string | undefined {
  const v = req.headers[name.toLowerCase()];
  if (Array.isArray(v)) return v[0];
  return v ?? undefined;
}

/** Reads a small body (JSON control messages); rejects above `limit` bytes. */
export async function readSmallBody(req: EnvdRequest, limit = 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new BodyTooLargeError(limit);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** A control request body exceeded its limit. */
export class BodyTooLargeError extends Error {
  constructor(limit: number) {
    super(`request body exceeds ${limit} bytes`);
  }
}
