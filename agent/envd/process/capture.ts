/** Bytes kept from the start of each output stream, and again from its end (issue 22's command history). */
export const CAPTURE_EDGE_BYTES = 64 * 1024;
/**
 * Processes that get the full {@link CAPTURE_EDGE_BYTES} at once; beyond them a new process keeps
 * {@link CAPTURE_EDGE_BYTES_CROWDED} per edge, so captures of live processes stay near 32 MiB at most
 * (plus 16 KiB for each further one, which the sandbox's pids quota bounds).
 */
export const CAPTURE_FULL_PROCESSES = 128;
export const CAPTURE_EDGE_BYTES_CROWDED = 4 * 1024;

/**
 * The first and last {@link CAPTURE_EDGE_BYTES} of one output stream and its total size, in bounded
 * memory (at most twice the edge size, however much the process writes): the head fills first, then
 * a ring holds the newest bytes after it.
 */
export class StreamCapture {
  constructor(private readonly edge: number = CAPTURE_EDGE_BYTES) {}

  /** Allocated on the first byte: a process that writes nothing costs nothing. */
  #head: Buffer | undefined;
  #headUsed = 0;
  /** Allocated on the first byte past the head: most commands never write that much. */
  #ring: Buffer | undefined;
  /** Bytes written after the head (the ring holds the last of them). */
  #afterHead = 0;
  #total = 0;

  /** Appends a chunk of output. */
  push(data: Uint8Array): void {
    this.#total += data.byteLength;
    let rest = data;
    if (this.#headUsed < this.edge) {
      this.#head ??= Buffer.alloc(this.edge);
      const take = Math.min(this.edge - this.#headUsed, rest.byteLength);
      this.#head.set(rest.subarray(0, take), this.#headUsed);
      this.#headUsed += take;
      rest = rest.subarray(take);
    }
    if (rest.byteLength === 0) return;
    this.#ring ??= Buffer.alloc(this.edge);
    // Only the last ring-size bytes of a large chunk can survive; skip the rest.
    if (rest.byteLength > this.edge) {
      this.#afterHead += rest.byteLength - this.edge;
      rest = rest.subarray(rest.byteLength - this.edge);
    }
    const at = this.#afterHead % this.edge;
    const first = Math.min(this.edge - at, rest.byteLength);
    this.#ring.set(rest.subarray(0, first), at);
    if (first < rest.byteLength) this.#ring.set(rest.subarray(first), 0);
    this.#afterHead += rest.byteLength;
  }

  /** Total bytes written. */
  get total(): number {
    return this.#total;
  }

  /** The head. */
  head(): Buffer {
    return this.#head ? Buffer.from(this.#head.subarray(0, this.#headUsed)) : Buffer.alloc(0);
  }

  /** The last bytes after the head (empty when everything fit in the head). */
  tail(): Buffer {
    const ring = this.#ring;
    if (!ring || this.#afterHead === 0) return Buffer.alloc(0);
    if (this.#afterHead <= this.edge) return Buffer.from(ring.subarray(0, this.#afterHead));
    const at = this.#afterHead % this.edge;
    return Buffer.concat([ring.subarray(at), ring.subarray(0, at)]);
  }
}

/** What the journal keeps of a process's output: stdout and stderr (a PTY's output counts as stdout). */
export class OutputCapture {
  readonly stdout: StreamCapture;
  readonly stderr: StreamCapture;

  constructor(edgeBytes: number = CAPTURE_EDGE_BYTES) {
    this.stdout = new StreamCapture(edgeBytes);
    this.stderr = new StreamCapture(edgeBytes);
  }

  push(stream: "stdout" | "stderr" | "pty", data: Uint8Array): void {
    (stream === "stderr" ? this.stderr : this.stdout).push(data);
  }
}
