/**
 * A streaming multipart/form-data reader over web streams (no Node APIs, so it runs on Workers).
 * Parts are yielded in order; each part's body is a stream that must be read (or cancelled)
 * before the next part is requested. Nothing is buffered beyond one network chunk plus a boundary.
 */

const CR = 13;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const headerTerminator = pattern(encoder.encode("\r\n\r\n"));

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

/** A byte pattern to search for, with its Boyer–Moore–Horspool shift table. */
interface Pattern {
  bytes: Uint8Array;
  /** How far the search may move on when the byte under the pattern's last position is this one. */
  shift: Uint32Array;
}

function pattern(bytes: Uint8Array): Pattern {
  const length = bytes.length;
  const shift = new Uint32Array(256).fill(length);
  for (let i = 0; i < length - 1; i++) shift[bytes[i] as number] = length - 1 - i;
  return { bytes, shift };
}

/**
 * First index of `needle` in `haystack` at or after `from`, or -1 (Boyer–Moore–Horspool). A file's
 * bytes are scanned for the ~70-byte delimiter mostly a delimiter's length at a time; the earlier
 * scan (native `indexOf` of the delimiter's first byte, a CR, then a compare) stopped at every CR,
 * one byte in 256 of random data, and was most of the edge's CPU on a large multipart upload.
 */
function indexOfPattern(haystack: Uint8Array, needle: Pattern, from: number): number {
  const n = needle.bytes;
  const shift = needle.shift;
  const last = n.length - 1;
  const end = haystack.length - last;
  let i = from;
  while (i < end) {
    const tail = haystack[i + last] as number;
    if (tail === n[last]) {
      let j = last - 1;
      while (j >= 0 && haystack[i + j] === n[j]) j--;
      if (j < 0) return i;
    }
    i += shift[tail] as number;
  }
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
  const delimiter = pattern(encoder.encode(`\r\n--${boundary}`));
  const delimiterLength = delimiter.bytes.length;
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
    const first = pattern(encoder.encode(`--${boundary}`));
    let start = indexOfPattern(buf, first, 0);
    while (start === -1) {
      if (buf.length > 64 * 1024) throw new MultipartError("no multipart boundary found");
      if (!(await fill())) throw new MultipartError("the multipart body is empty or has no boundary");
      start = indexOfPattern(buf, first, 0);
    }
    buf = buf.subarray(start + first.bytes.length);
    for (;;) {
      while (buf.length < 2) if (!(await fill())) throw new MultipartError("the multipart body ends early");
      if (buf[0] === 45 && buf[1] === 45) return; // "--": closing delimiter
      if (buf[0] !== CR || buf[1] !== 10) throw new MultipartError("malformed multipart delimiter");
      buf = buf.subarray(2);
      let headerEnd = indexOfPattern(buf, headerTerminator, 0);
      while (headerEnd === -1) {
        if (buf.length > 16 * 1024) throw new MultipartError("multipart part headers are too long");
        if (!(await fill())) throw new MultipartError("the multipart body ends inside part headers");
        headerEnd = indexOfPattern(buf, headerTerminator, 0);
      }
      const headers = parseHeaders(decoder.decode(buf.subarray(0, headerEnd)));
      buf = buf.subarray(headerEnd + 4);
      let partDone = false;
      let failure: unknown;
      // Returns the next bytes of this part, or null at its end. A network chunk is passed on whole
      // (a view, never a copy) once the next chunk shows that no delimiter starts in its last bytes
      // and ends in the next one; so a file part comes out as one segment per network chunk, with
      // no sliver of a held-back tail (each sliver cost a write, a chunk frame and a packet in every
      // process downstream) and no copy of every chunk to join such a tail to it (a copy, and
      // garbage, of the whole file: the largest cost left in the edge's multipart upload).
      const overlap = delimiterLength - 1;
      const readSegment = async (): Promise<Uint8Array | null> => {
        for (;;) {
          const at = indexOfPattern(buf, delimiter, 0);
          if (at !== -1) {
            const data = buf.subarray(0, at);
            buf = buf.subarray(at + delimiterLength);
            partDone = true;
            return data.length > 0 ? data : null;
          }
          const next = await reader.read();
          if (next.done) {
            done = true;
            throw new MultipartError("the multipart body ends inside a part");
          }
          const chunk = next.value;
          if (chunk.length < overlap || buf.length < overlap) {
            // A short piece on either side: pass on what cannot hold the start of a delimiter, and
            // join the rest (at most a delimiter's length of it, plus the new piece) to search again.
            if (buf.length > overlap) {
              const data = buf.subarray(0, buf.length - overlap);
              buf = concat(buf.subarray(buf.length - overlap), chunk);
              return data;
            }
            buf = concat(buf, chunk);
            continue;
          }
          const tailStart = buf.length - overlap;
          const bridge = concat(buf.subarray(tailStart), chunk.subarray(0, overlap));
          const inBridge = indexOfPattern(bridge, delimiter, 0);
          if (inBridge !== -1) {
            // The delimiter starts in this chunk's tail and ends in the next one.
            const data = buf.subarray(0, tailStart + inBridge);
            buf = chunk.subarray(inBridge + delimiterLength - overlap);
            partDone = true;
            return data.length > 0 ? data : null;
          }
          const data = buf;
          buf = chunk;
          if (data.length > 0) return data;
        }
      };
      const partBody = new ReadableStream<Uint8Array>(
        {
          pull: async (controller) => {
            try {
              const data = partDone ? null : await readSegment();
              if (data) controller.enqueue(data);
              if (partDone) {
                // The last segment and the end may come together; close after enqueueing it.
                controller.close();
              }
            } catch (err) {
              failure = err;
              controller.error(err);
            }
          },
          cancel: async () => {
            // Skip what is left of this part so the next one can be read.
            try {
              while (!partDone) await readSegment();
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
