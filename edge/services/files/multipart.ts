/**
 * A streaming multipart/form-data reader over web streams (no Node APIs, so it runs on Workers).
 * Parts are yielded in order; each part's body is a stream that must be read (or cancelled)
 * before the next part is requested. Nothing is buffered beyond one network chunk plus a boundary.
 */

const CR = 13;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const headerTerminator = encoder.encode("\r\n\r\n");

/** One part of a multipart body. */
export interface MultipartPart {
  /** The `name` of its Content-Disposition. */
  name: string;
  /** The `filename` of its Content-Disposition, when it is a file. */
  filename?: string;
  contentType?: string;
  body: ReadableStream<Uint8Array>;
}

/** The request's multipart body could not be parsed. */
export class MultipartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MultipartError";
  }
}

/** The boundary of a `multipart/form-data; boundary=…` content type, or undefined. */
export function multipartBoundary(contentType: string | undefined): string | undefined {
  if (!contentType || !/^multipart\/form-data\b/i.test(contentType)) return undefined;
  const match = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  const boundary = match?.[1] ?? match?.[2];
  return boundary && boundary.length <= 200 ? boundary : undefined;
}

function indexOfSequence(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  const first = needle[0];
  if (first === undefined) return from;
  let i = haystack.indexOf(first, from);
  while (i !== -1 && i + needle.length <= haystack.length) {
    let match = true;
    for (let j = 1; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) {
        match = false;
        break;
      }
    }
    if (match) return i;
    i = haystack.indexOf(first, i + 1);
  }
  // A partial match at the end may complete with the next chunk: report where it could start.
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function parseHeaders(block: string): { name: string; filename?: string; contentType?: string } {
  let name: string | undefined;
  let filename: string | undefined;
  let contentType: string | undefined;
  for (const line of block.split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const key = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (key === "content-disposition") {
      name = /\bname="([^"]*)"/i.exec(value)?.[1] ?? /\bname=([^;\s]+)/i.exec(value)?.[1];
      filename = /\bfilename="([^"]*)"/i.exec(value)?.[1] ?? /\bfilename=([^;\s]+)/i.exec(value)?.[1];
    } else if (key === "content-type") {
      contentType = value;
    }
  }
  if (name === undefined) throw new MultipartError("a multipart part has no Content-Disposition name");
  const out: { name: string; filename?: string; contentType?: string } = { name };
  if (filename !== undefined) out.filename = filename;
  if (contentType !== undefined) out.contentType = contentType;
  return out;
}

/** Reads the parts of a multipart body one at a time. */
export async function* readMultipart(
  body: ReadableStream<Uint8Array>,
  boundary: string,
): AsyncGenerator<MultipartPart> {
  const reader = body.getReader();
  const delimiter = encoder.encode(`\r\n--${boundary}`);
  let buf: Uint8Array = new Uint8Array(0);
  let done = false;

  const fill = async (): Promise<boolean> => {
    if (done) return false;
    const next = await reader.read();
    if (next.done) {
      done = true;
      return false;
    }
    buf = concat(buf, next.value);
    return true;
  };

  try {
    // The body starts with "--boundary" (RFC 2046 allows a preamble; we search past it).
    const first = encoder.encode(`--${boundary}`);
    let start = indexOfSequence(buf, first, 0);
    while (start === -1) {
      if (buf.length > 64 * 1024) throw new MultipartError("no multipart boundary found");
      if (!(await fill())) throw new MultipartError("the multipart body is empty or has no boundary");
      start = indexOfSequence(buf, first, 0);
    }
    buf = buf.subarray(start + first.length);
    for (;;) {
      while (buf.length < 2) if (!(await fill())) throw new MultipartError("the multipart body ends early");
      if (buf[0] === 45 && buf[1] === 45) return; // "--": closing delimiter
      if (buf[0] !== CR || buf[1] !== 10) throw new MultipartError("malformed multipart delimiter");
      buf = buf.subarray(2);
      let headerEnd = indexOfSequence(buf, headerTerminator, 0);
      while (headerEnd === -1) {
        if (buf.length > 16 * 1024) throw new MultipartError("multipart part headers are too long");
        if (!(await fill())) throw new MultipartError("the multipart body ends inside part headers");
        headerEnd = indexOfSequence(buf, headerTerminator, 0);
      }
      const headers = parseHeaders(decoder.decode(buf.subarray(0, headerEnd)));
      buf = buf.subarray(headerEnd + 4);
      let partDone = false;
      let failure: unknown;
      const partBody = new ReadableStream<Uint8Array>(
        {
          pull: async (controller) => {
            try {
              for (;;) {
                const at = indexOfSequence(buf, delimiter, 0);
                if (at !== -1) {
                  if (at > 0) controller.enqueue(buf.slice(0, at));
                  buf = buf.subarray(at + delimiter.length);
                  partDone = true;
                  controller.close();
                  return;
                }
                // Keep a tail that could be the start of the delimiter; emit the rest.
                const safe = buf.length - (delimiter.length - 1);
                if (safe > 0) {
                  controller.enqueue(buf.slice(0, safe));
                  buf = buf.subarray(safe);
                  if (!(await fill())) throw new MultipartError("the multipart body ends inside a part");
                  return;
                }
                if (!(await fill())) throw new MultipartError("the multipart body ends inside a part");
              }
            } catch (err) {
              failure = err;
              controller.error(err);
            }
          },
          cancel: async () => {
            // Skip what is left of this part so the next one can be read.
            try {
              while (!partDone) {
                const at = indexOfSequence(buf, delimiter, 0);
                if (at !== -1) {
                  buf = buf.subarray(at + delimiter.length);
                  partDone = true;
                  return;
                }
                const keep = Math.max(0, buf.length - (delimiter.length - 1));
                buf = buf.subarray(keep);
                if (!(await fill())) throw new MultipartError("the multipart body ends inside a part");
              }
            } catch (err) {
              failure = err;
            }
          },
        },
        { highWaterMark: 0 },
      );
      yield { ...headers, body: partBody };
      if (!partDone && failure === undefined) await partBody.cancel().catch(() => {});
      if (failure !== undefined) throw failure;
      if (!partDone) throw new MultipartError("a multipart part was not read to its end");
    }
  } finally {
    reader.releaseLock();
  }
}

/** Reads a small text part (form field) whole, refusing more than `maxBytes`. */
export async function readTextPart(part: MultipartPart, maxBytes: number): Promise<string> {
  const reader = part.body.getReader();
  let out: Uint8Array = new Uint8Array(0);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    out = concat(out, value);
    if (out.length > maxBytes) {
      await reader.cancel();
      throw new MultipartError(`form field "${part.name}" is longer than ${maxBytes} bytes`);
    }
  }
  return decoder.decode(out);
}
