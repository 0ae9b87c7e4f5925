import type { Readable, Writable } from "node:stream";

/** Chunks a web stream made by `webStreamOf` holds before it pauses its source (each ≤ one socket read). */
const bufferedChunks = 8;

/** What `webStreamOf` keeps so that a Node consumer can take its source back (see `takeNodeSource`). */
interface Detachable {
  source: Readable;
  controller: ReadableStreamDefaultController<Uint8Array>;
  /** Removes the web stream's listeners from the source; it will enqueue nothing more. */
  detach(): void;
}

const detachable = new WeakMap<ReadableStream<Uint8Array>, Detachable>();

/**
 * A web ReadableStream over a Node Readable of bytes, for the Node edge's hot paths (uploads and
 * downloads). Unlike `Readable.toWeb`, it passes each Buffer on as it is instead of copying it into
 * a fresh Uint8Array, which cost a third of the edge's CPU on a large upload. The source is paused
 * while the consumer is behind, so at most a few socket reads are held. A Node consumer that gets
 * the stream unread can take the source back with `takeNodeSource` and skip web streams entirely.
 */
export function webStreamOf(source: Readable): ReadableStream<Uint8Array> {
  let settled = false;
  const onData = (chunk: Buffer | string) => {
    if (settled || !controllerRef) return;
    controllerRef.enqueue(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
    if ((controllerRef.desiredSize ?? 0) <= 0) source.pause();
  };
  const onEnd = () => {
    if (settled) return;
    settled = true;
    controllerRef?.close();
  };
  const onError = (err: Error) => {
    if (settled) return;
    settled = true;
    controllerRef?.error(err);
  };
  // A socket that closes without "end" (the peer went away mid-body) must not look like a
  // complete body: that would turn a cut-off upload into a short file.
  const onClose = () => {
    if (settled) return;
    settled = true;
    controllerRef?.error(new Error("the stream closed before its end"));
  };
  let controllerRef: ReadableStreamDefaultController<Uint8Array> | undefined;
  const stream = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        controllerRef = controller;
        source.on("data", onData);
        source.once("end", onEnd);
        source.once("error", onError);
        source.once("close", onClose);
        source.pause();
      },
      pull() {
        source.resume();
      },
      cancel() {
        settled = true;
        source.destroy();
      },
    },
    { highWaterMark: bufferedChunks },
  );
  if (controllerRef) {
    detachable.set(stream, {
      source,
      controller: controllerRef,
      detach() {
        source.pause();
        source.off("data", onData);
        source.off("end", onEnd);
        source.off("error", onError);
        source.off("close", onClose);
      },
    });
  }
  return stream;
}

/** A Node source taken back from a web stream: the chunks the stream had queued come first. */
export interface TakenSource {
  source: Readable;
  queued: Buffer[];
  /** The web stream had already seen the source's end (every byte is in `queued`). */
  ended: boolean;
}

/**
 * The Node Readable under a stream made by `webStreamOf`, for a Node consumer (a socket write, a
 * pipe) that would otherwise read it chunk by chunk through web streams: on a 256 MiB transfer that
 * is two promise-based layers per socket read in each direction. Undefined when the stream was not
 * made by `webStreamOf`, is locked or has been read, or failed. The stream must not be used after.
 */
export async function takeNodeSource(stream: ReadableStream<Uint8Array>): Promise<TakenSource | undefined> {
  const entry = detachable.get(stream);
  if (!entry || stream.locked) return undefined;
  detachable.delete(stream);
  entry.detach();
  // What the stream holds: the chunks enqueued and not read (its size is the high-water mark minus
  // desiredSize; null when it errored, 0 when closed with nothing left).
  const desired = entry.controller.desiredSize;
  const reader = stream.getReader();
  const queued: Buffer[] = [];
  let ended = false;
  if (desired === null) {
    reader.releaseLock();
    entry.source.destroy();
    return undefined;
  }
  for (let held = bufferedChunks - desired; held > 0 || entry.source.readableEnded; held--) {
    const next = await reader.read().catch(() => undefined);
    if (next === undefined) {
      entry.source.destroy();
      return undefined;
    }
    if (next.done) {
      ended = true;
      break;
    }
    queued.push(Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value));
  }
  reader.releaseLock();
  return { source: entry.source, queued, ended };
}

/**
 * Pipes a taken source into a Node writable with backpressure. Resolves when every byte is written
 * and the writable ended; rejects when the source fails or closes before its end (the writable is
 * then left for the caller to destroy, so a cut-off body never looks complete) or when the writable
 * closes first (the source is destroyed).
 */
export function pipeTaken(taken: TakenSource, sink: Writable): Promise<void> {
  const { source } = taken;
  return new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      source.off("data", onData);
      source.off("end", onEnd);
      source.off("error", onError);
      source.off("close", onSourceClose);
      sink.off("drain", onDrain);
      sink.off("close", onSinkClose);
      if (err) reject(err);
      else resolve();
    };
    const onData = (chunk: Buffer) => {
      if (!sink.write(chunk)) source.pause();
    };
    const onDrain = () => source.resume();
    const onEnd = () => sink.end(() => finish());
    const onError = (err: Error) => finish(err);
    const onSourceClose = () => {
      if (!source.readableEnded) finish(new Error("the stream closed before its end"));
    };
    const onSinkClose = () => {
      if (sink.writableFinished) return;
      source.destroy();
      finish(new Error("the receiving side closed before the end"));
    };
    sink.on("drain", onDrain);
    sink.once("close", onSinkClose);
    for (const chunk of taken.queued) sink.write(chunk);
    if (taken.ended || source.readableEnded) {
      sink.end(() => finish());
      return;
    }
    if (source.destroyed && !source.readableEnded) {
      finish(new Error("the stream closed before its end"));
      return;
    }
    source.on("data", onData);
    source.once("end", onEnd);
    source.once("error", onError);
    source.once("close", onSourceClose);
    source.resume();
  });
}
