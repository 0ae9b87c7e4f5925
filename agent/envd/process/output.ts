/** One thing a process did that a Start or Connect stream reports. */
export type OutputEvent =
  | { kind: "data"; stream: "stdout" | "stderr" | "pty"; data: Uint8Array }
  | { kind: "end"; exitCode: number; exited: boolean; status: string; error?: string };

/** What {@link OutputSubscription.next} yields besides events: the idle timer fired, or the subscription closed. */
export type NextResult = OutputEvent | "idle" | "closed";

/** Queue size above which a subscriber counts as slow, and the process's output is paused. */
export const HIGH_WATER_BYTES = 4 * 1024 * 1024;
/** Queue size every subscriber must drain below before the process's output resumes. */
export const LOW_WATER_BYTES = 1024 * 1024;

/**
 * Fans a process's output out to every attached stream. Nothing is dropped for a slow reader:
 * when any subscriber has more than {@link HIGH_WATER_BYTES} queued, the source is paused (the
 * process then blocks on its own writes) until every subscriber is below {@link LOW_WATER_BYTES}.
 * Output produced before the first reader attaches (the Start stream subscribes only after the
 * process is running, and a fast command may already have written and exited) is kept for that first
 * reader; after that, output produced while nobody is attached is not kept, as in E2B's envd.
 */
export class OutputFanout {
  private readonly subscribers = new Set<OutputSubscription>();
  private paused = false;
  private endEvent: OutputEvent | undefined;
  /** Output published before anyone subscribed; undefined once the first reader has attached. */
  private early: OutputEvent[] | undefined = [];
  private earlyBytes = 0;

  constructor(private readonly source: { pause(): void; resume(): void }) {}

  /** Attaches a new reader; it sees output from now on (and the end, if the process already ended). */
  subscribe(): OutputSubscription {
    const sub = new OutputSubscription(this);
    const early = this.early;
    this.early = undefined;
    this.earlyBytes = 0;
    if (early) for (const event of early) if (event.kind === "data") sub.push(event);
    if (this.endEvent) sub.push(this.endEvent);
    else this.subscribers.add(sub);
    // Output held for this reader may have paused the source; resume once it drains.
    this.maybeResume();
    return sub;
  }

  /** Number of attached readers. */
  get size(): number {
    return this.subscribers.size;
  }

  /** Delivers a chunk to every reader. */
  publish(event: OutputEvent): void {
    if (this.endEvent) return;
    if (event.kind === "end") {
      this.endEvent = event;
      for (const sub of this.subscribers) sub.push(event);
      this.subscribers.clear();
      this.maybeResume();
      return;
    }
    if (this.early) {
      this.early.push(event);
      this.earlyBytes += event.data.byteLength;
      if (!this.paused && this.earlyBytes > HIGH_WATER_BYTES) {
        this.paused = true;
        this.source.pause();
      }
      return;
    }
    for (const sub of this.subscribers) sub.push(event);
    if (!this.paused) {
      for (const sub of this.subscribers) {
        if (sub.queuedBytes > HIGH_WATER_BYTES) {
          this.paused = true;
          this.source.pause();
          break;
        }
      }
    }
  }

  /** @internal Called by a subscription when it drained or detached. */
  onDrain(): void {
    this.maybeResume();
  }

  /** @internal */
  detach(sub: OutputSubscription): void {
    this.subscribers.delete(sub);
    this.maybeResume();
  }

  private maybeResume(): void {
    if (!this.paused) return;
    for (const sub of this.subscribers) if (sub.queuedBytes > LOW_WATER_BYTES) return;
    this.paused = false;
    this.source.resume();
  }
}

/** One reader's queue of output events. */
export class OutputSubscription {
  private readonly queue: OutputEvent[] = [];
  private waiter: ((r: NextResult) => void) | undefined;
  private closed = false;
  /** Bytes of data events waiting in this queue. */
  queuedBytes = 0;

  constructor(private readonly fanout: OutputFanout) {}

  /** @internal */
  push(event: OutputEvent): void {
    if (this.closed) return;
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      waiter(event);
      return;
    }
    this.queue.push(event);
    if (event.kind === "data") this.queuedBytes += event.data.byteLength;
  }

  /** Waits for the next event, at most `idleMs` (then "idle"); "closed" after {@link close}. */
  next(idleMs: number): Promise<NextResult> {
    const event = this.queue.shift();
    if (event) {
      if (event.kind === "data") {
        this.queuedBytes -= event.data.byteLength;
        if (this.queuedBytes <= LOW_WATER_BYTES) this.fanout.onDrain();
      }
      return Promise.resolve(event);
    }
    if (this.closed) return Promise.resolve("closed");
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        if (this.waiter === done) this.waiter = undefined;
        resolve("idle");
      }, idleMs);
      const done = (r: NextResult) => {
        clearTimeout(timer);
        resolve(r);
      };
      this.waiter = done;
    });
  }

  /** Detaches this reader; a pending {@link next} resolves "closed". */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    this.queuedBytes = 0;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.("closed");
    this.fanout.detach(this);
  }
}
