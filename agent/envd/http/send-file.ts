import type { FileHandle } from "node:fs/promises";
import type { EnvdResponse } from "./common.js";

/** Bytes per read of a download. */
export const SEND_CHUNK_BYTES = 1024 * 1024;
/** Read buffers per download; also the most a download holds in memory. */
export const SEND_BUFFERS = 4;

/** Why a download stopped before its last byte. */
export class SendFileError extends Error {}

/**
 * Sends bytes `start`…`end` (inclusive) of `file` as the body of `res`, then ends it.
 *
 * A file stream would allocate a fresh buffer for every read: a 256 MiB download leaves 256 MiB of
 * garbage for V8 to find, and the process's memory grows with it. Here a few buffers are reused: one
 * is refilled only after the connection has taken the bytes it held (the write callback), so a
 * download holds at most {@link SEND_BUFFERS} × {@link SEND_CHUNK_BYTES} whatever the file size,
 * and a slow client is throttled by the same rule.
 */
export async function sendFileRange(file: FileHandle, res: EnvdResponse, start: number, end: number): Promise<void> {
  const free: Buffer[] = [];
  let allocated = 0;
  // A small file needs one small buffer, not the full set.
  const bufferBytes = Math.min(SEND_CHUNK_BYTES, end - start + 1);
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onClose = () => {
    if (!res.writableFinished) failure ??= new SendFileError("the client went away");
    notify();
  };
  res.once("close", onClose);
  // Both response types are Writables; the union's overloads just do not line up for the compiler.
  const body = res as NodeJS.WritableStream;
  try {
    let position = start;
    while (position <= end) {
      if (free.length === 0 && allocated < SEND_BUFFERS) {
        free.push(Buffer.allocUnsafeSlow(bufferBytes));
        allocated++;
      }
      let buffer = free.pop();
      while (!buffer && !failure) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        buffer = free.pop();
      }
      if (failure) throw failure;
      if (!buffer) throw new SendFileError("no read buffer");
      const want = Math.min(buffer.length, end - position + 1);
      const { bytesRead } = await file.read(buffer, 0, want, position);
      if (failure) throw failure;
      // The length was promised in Content-Length; a file that shrank mid-send cannot keep it.
      if (bytesRead === 0) throw new SendFileError("the file shrank while it was being sent");
      position += bytesRead;
      const held = buffer;
      body.write(bytesRead === held.length ? held : held.subarray(0, bytesRead), (err) => {
        if (err) failure ??= err;
        free.push(held);
        notify();
      });
    }
    await new Promise<void>((resolve) => {
      wake = resolve;
      body.end(() => resolve());
    });
    if (failure && !res.writableFinished) throw failure;
  } finally {
    res.off("close", onClose);
  }
}
