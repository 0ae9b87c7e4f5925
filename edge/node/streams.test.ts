import { PassThrough, Readable, Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { pipeTaken, takeNodeSource, webStreamOf } from "./streams.js";

/** A writable that collects what it is given, slowly enough to push back now and then. */
function collector(): Writable & { bytes(): Buffer } {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    highWaterMark: 1024,
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      setImmediate(cb);
    },
  });
  return Object.assign(sink, { bytes: () => Buffer.concat(chunks) });
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("takeNodeSource", () => {
  it("hands the source back with the chunks the web stream had queued, and the pipe keeps every byte in order", async () => {
    const source = new PassThrough();
    const stream = webStreamOf(source);
    const expected: Buffer[] = [];
    for (let i = 0; i < 5; i++) {
      const chunk = Buffer.alloc(700, i);
      expected.push(chunk);
      source.write(chunk);
    }
    await tick(); // the web stream pulls: its queue now holds chunks
    const taken = await takeNodeSource(stream);
    expect(taken).toBeDefined();
    if (!taken) return;
    expect(taken.queued.length).toBeGreaterThan(0);
    const sink = collector();
    const piped = pipeTaken(taken, sink);
    for (let i = 5; i < 40; i++) {
      const chunk = Buffer.alloc(900, i);
      expected.push(chunk);
      source.write(chunk);
    }
    source.end();
    await piped;
    expect(sink.bytes().equals(Buffer.concat(expected))).toBe(true);
  });

  it("takes a source that already ended, every byte in the queue", async () => {
    const stream = webStreamOf(Readable.from([Buffer.from("ab"), Buffer.from("cd")]));
    await tick();
    await tick();
    const taken = await takeNodeSource(stream);
    if (!taken) throw new Error("not taken");
    const sink = collector();
    await pipeTaken(taken, sink);
    expect(sink.bytes().toString()).toBe("abcd");
  });

  it("refuses a stream it did not make, or one already being read", async () => {
    expect(await takeNodeSource(new ReadableStream<Uint8Array>())).toBeUndefined();
    const stream = webStreamOf(new PassThrough());
    stream.getReader();
    expect(await takeNodeSource(stream)).toBeUndefined();
  });

  it("rejects (never ends the sink cleanly) when the source closes before its end", async () => {
    const source = new PassThrough();
    const taken = await takeNodeSource(webStreamOf(source));
    if (!taken) throw new Error("not taken");
    const sink = collector();
    let finished = false;
    sink.once("finish", () => {
      finished = true;
    });
    const piped = pipeTaken(taken, sink);
    source.write(Buffer.from("partial"));
    source.destroy();
    await expect(piped).rejects.toThrow(/closed before its end/);
    expect(finished).toBe(false);
  });

  it("destroys the source when the sink closes first", async () => {
    const source = new PassThrough();
    const taken = await takeNodeSource(webStreamOf(source));
    if (!taken) throw new Error("not taken");
    const sink = collector();
    const piped = pipeTaken(taken, sink);
    source.write(Buffer.from("x"));
    await tick();
    sink.destroy();
    await expect(piped).rejects.toThrow(/receiving side closed/);
    expect(source.destroyed).toBe(true);
  });
});
