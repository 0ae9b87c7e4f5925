/**
 * The answer of `POST /v1/sandboxes/{id}/exec` as JSON bytes, built straight from the output bytes.
 *
 * The output is up to 16 MiB per stream. Decoding it to a string and serialising an object with
 * `JSON.stringify` scanned and copied it three more times in one turn of the event loop (40–90 ms for
 * 16 MiB, the largest part of the edge's time for a large exec; issue 23). Here the output is
 * decoded a slice at a time, only slices holding a character JSON escapes go through
 * `JSON.stringify`, and the pieces are written into one buffer of the answer's exact size (byte for
 * byte what `JSON.stringify` writes for the whole object); binary output is base64-encoded straight
 * into it. The event loop turns between slices, so other requests keep being served meanwhile.
 */

/** What the agent returned for a finished command. */
export interface ExecOutput {
  stdout: Uint8Array;
  stderr: Uint8Array;
  exitCode: number;
  /** Present when the command did not end by itself. */
  error?: string;
  truncated: boolean;
  durationMs: number;
}

/** Input bytes handled per turn of the event loop (a multiple of 3, so base64 slices join up). */
export const jsonSliceBytes = 3 * 256 * 1024;

const utf8 = new TextEncoder();

const base64Codes = utf8.encode("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");

type NativeBase64 = Uint8Array & { toBase64?: () => string };
type BufferLike = { from(b: ArrayBufferLike, offset: number, length: number): { toString(enc: "base64"): string } };

/** Lets other work run between slices: `setImmediate` where there is one (Node), else a zero timer. */
function nextTurn(): Promise<void> {
  const immediate = (globalThis as { setImmediate?: (fn: () => void) => unknown }).setImmediate;
  return new Promise((resolve) => (immediate ? immediate(resolve) : setTimeout(resolve, 0)));
}

/** Control characters, `"` and `\`: what JSON.stringify escapes in a well-formed string. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for.
const needsEscape = /[\u0000-\u001f"\\]/;

/** The inside of a JSON string for valid UTF-8 output: pieces of text and their UTF-8 length. */
interface JsonText {
  pieces: string[];
  bytes: number;
}

/**
 * The end of the slice from `at`: `at + jsonSliceBytes` moved back (at most 3 bytes) to the start
 * of a character, so valid UTF-8 splits into valid pieces (and invalid UTF-8 leaves an invalid one).
 */
function sliceEnd(bytes: Uint8Array, at: number): number {
  let end = Math.min(bytes.length, at + jsonSliceBytes);
  if (end === bytes.length) return end;
  for (let back = 0; back < 3 && ((bytes[end] as number) & 0xc0) === 0x80; back++) end--;
  return end;
}

/**
 * Decodes `bytes` a slice per turn and escapes each piece as JSON.stringify does (only the pieces
 * that need it; pieces hold whole characters, so they escape alone). Undefined when the bytes are
 * not valid UTF-8 (then the answer is base64). Each slice is decoded on its own: the one-shot
 * decoder is several times faster than the streaming one.
 */
async function jsonText(bytes: Uint8Array): Promise<JsonText | undefined> {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const pieces: string[] = [];
  // Escapes add ASCII only, so the UTF-8 length grows by as much as the string's.
  let grown = 0;
  try {
    for (let at = 0; at < bytes.length; ) {
      if (at > 0) await nextTurn();
      const end = sliceEnd(bytes, at);
      const text = decoder.decode(bytes.subarray(at, end));
      at = end;
      if (needsEscape.test(text)) {
        const escaped = JSON.stringify(text).slice(1, -1);
        grown += escaped.length - text.length;
        pieces.push(escaped);
      } else {
        pieces.push(text);
      }
    }
  } catch {
    return undefined;
  }
  return { pieces, bytes: bytes.length + grown };
}

/** Writes the pieces' UTF-8 at `out[o]`, a piece per turn; returns the offset after them. */
async function writeText(text: JsonText, out: Uint8Array, o: number): Promise<number> {
  for (let i = 0; i < text.pieces.length; i++) {
    if (i > 0) await nextTurn();
    o += utf8.encodeInto(text.pieces[i] as string, out.subarray(o)).written;
  }
  return o;
}

/** Length of the padded base64 of `length` bytes. */
const base64Length = (length: number) => Math.ceil(length / 3) * 4;

/**
 * Writes the standard padded base64 of `bytes` at `out[o]`, a slice per turn; returns the offset
 * after it. The runtime's native encoder when it has one (`Uint8Array.prototype.toBase64`, Node's
 * `Buffer`), its ASCII then copied in place; else a table encoder writing the bytes directly.
 */
async function writeBase64(bytes: Uint8Array, out: Uint8Array, o: number): Promise<number> {
  const buffer = (globalThis as { Buffer?: BufferLike }).Buffer;
  for (let at = 0; at < bytes.length; at += jsonSliceBytes) {
    if (at > 0) await nextTurn();
    const slice = bytes.subarray(at, at + jsonSliceBytes);
    const native = (slice as NativeBase64).toBase64;
    const text =
      typeof native === "function"
        ? native.call(slice)
        : buffer?.from(slice.buffer, slice.byteOffset, slice.length).toString("base64");
    if (text !== undefined) {
      // base64 is ASCII: as many bytes as characters.
      utf8.encodeInto(text, out.subarray(o, o + text.length));
      o += text.length;
    } else {
      o = base64Into(slice, out, o);
    }
  }
  return o;
}

/** The table encoder of {@link writeBase64}, for runtimes without a native one (exported for its tests). */
export function base64Into(bytes: Uint8Array, out: Uint8Array, o: number): number {
  const length = bytes.length;
  const whole = length - (length % 3);
  for (let i = 0; i < whole; i += 3) {
    const n = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8) | (bytes[i + 2] as number);
    out[o++] = base64Codes[n >>> 18] as number;
    out[o++] = base64Codes[(n >>> 12) & 63] as number;
    out[o++] = base64Codes[(n >>> 6) & 63] as number;
    out[o++] = base64Codes[n & 63] as number;
  }
  const rest = length - whole;
  if (rest > 0) {
    const n = ((bytes[whole] as number) << 16) | (rest === 2 ? (bytes[whole + 1] as number) << 8 : 0);
    out[o++] = base64Codes[n >>> 18] as number;
    out[o++] = base64Codes[(n >>> 12) & 63] as number;
    out[o++] = rest === 2 ? (base64Codes[(n >>> 6) & 63] as number) : 61;
    out[o++] = 61;
  }
  return o;
}

/**
 * The ExecResult JSON of `output` (`stdout`, `stderr`, `exitCode`, `encoding`, `truncated`,
 * `durationMs`, then `error` when present): both streams as text when both are valid UTF-8, else
 * both base64. The same bytes `JSON.stringify` writes for that object.
 */
export async function execResultJson(output: ExecOutput): Promise<Uint8Array<ArrayBuffer>> {
  const stdoutText = await jsonText(output.stdout);
  const stderrText = stdoutText && (await jsonText(output.stderr));
  const asText = stdoutText !== undefined && stderrText !== undefined;
  const rest: Record<string, unknown> = {
    exitCode: output.exitCode,
    encoding: asText ? "utf-8" : "base64",
    truncated: output.truncated,
    durationMs: output.durationMs,
  };
  if (output.error) rest.error = output.error;
  const head = utf8.encode('{"stdout":"');
  const middle = utf8.encode('","stderr":"');
  // `{"exitCode":…}` becomes `","exitCode":…}` after the closing quote of stderr.
  const tail = utf8.encode(`",${JSON.stringify(rest).slice(1)}`);
  const outLength = asText ? stdoutText.bytes : base64Length(output.stdout.length);
  const errLength = asText ? stderrText.bytes : base64Length(output.stderr.length);
  const json = new Uint8Array(head.length + outLength + middle.length + errLength + tail.length);
  json.set(head, 0);
  let o = head.length;
  o = asText ? await writeText(stdoutText, json, o) : await writeBase64(output.stdout, json, o);
  json.set(middle, o);
  o += middle.length;
  o = asText ? await writeText(stderrText, json, o) : await writeBase64(output.stderr, json, o);
  json.set(tail, o);
  return json;
}
