/** Where progress lines go; the CLI passes stderr, tests pass a collector. */
export type ProgressSink = (line: string) => void;

/** What a running step may report about itself: a short detail and, when known, how far it is (0..1). */
export interface StepTicker {
  update(detail: string, fraction?: number): void;
}

/** Options of {@link Progress}. */
export interface ProgressOptions {
  /**
   * Redraws one terminal line in place (a bar and a counter each second). Without it, a running step
   * prints a plain line every `heartbeatMs`, so CI logs show it is alive and how long it has taken.
   */
  redraw?: (line: string) => void;
  /** How often a running step reports its elapsed time without a terminal (default 10 s). */
  heartbeatMs?: number;
  /** Where the full output of the steps goes; named on failure. */
  logFile?: string;
  /** The one command that retries after a failure (finished steps are cached); named on failure. */
  retryCommand?: string;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

/** A 20-cell bar for a fraction, e.g. `[#########-----------] 45%`. */
export function progressBar(fraction: number, cells = 20): string {
  const f = Math.min(1, Math.max(0, fraction));
  const filled = Math.round(f * cells);
  return `[${"#".repeat(filled)}${"-".repeat(cells - filled)}] ${Math.floor(f * 100)}%`;
}

/**
 * Step-counter progress for a build: "[3/9] debootstrap bookworm (minbase) …", then while it runs an
 * elapsed-time counter (with a bar when the step reports a fraction), then "done in 12.3s (total
 * 40.1s)". Without a terminal every line is plain (no control codes), so CI logs read the same as a
 * terminal. A failure ends with the log file and the command that retries, when they are known.
 */
export class Progress {
  private index = 0;
  private readonly started = performance.now();
  private done = 0;
  private skipped = 0;

  constructor(
    private total: number,
    private readonly sink: ProgressSink,
    private readonly options: ProgressOptions = {},
  ) {}

  /** Total elapsed seconds since the build started. */
  elapsedSeconds(): number {
    return (performance.now() - this.started) / 1000;
  }

  /** Adds steps discovered while building (a template's parent chain). */
  addSteps(n: number): void {
    this.total += n;
  }

  /** Runs one step, printing its number and label, an elapsed counter while it runs, then its duration or failure. */
  async step<T>(label: string, fn: (ticker: StepTicker) => Promise<T>): Promise<T> {
    this.index += 1;
    const tag = `[${this.index}/${Math.max(this.total, this.index)}]`;
    this.sink(`${tag} ${label} …`);
    const t0 = performance.now();
    let detail = "";
    let fraction: number | undefined;
    let lastBeat = "";
    const { redraw } = this.options;
    const line = () =>
      `${tag} ${label}: ${seconds(performance.now() - t0)}${fraction === undefined ? "" : ` ${progressBar(fraction)}`}${detail ? ` ${detail}` : ""}`;
    const beat = () => {
      if (redraw) {
        redraw(line());
        return;
      }
      // Plain output: a line per heartbeat, saying what changed (or only the time when nothing did).
      const now = line();
      if (now !== lastBeat) this.sink(now);
      lastBeat = now;
    };
    const timer = setInterval(beat, redraw ? 1_000 : (this.options.heartbeatMs ?? 10_000));
    timer.unref?.();
    const ticker: StepTicker = {
      update(text, f) {
        detail = text;
        if (f !== undefined) fraction = f;
      },
    };
    try {
      const result = await fn(ticker);
      clearInterval(timer);
      redraw?.("");
      this.done += 1;
      this.sink(
        `${tag} ${label}: done in ${seconds(performance.now() - t0)} (total ${this.elapsedSeconds().toFixed(1)}s)`,
      );
      return result;
    } catch (err) {
      clearInterval(timer);
      redraw?.("");
      this.sink(`${tag} ${label}: FAILED after ${seconds(performance.now() - t0)}`);
      this.failureFooter();
      throw err;
    }
  }

  /** Records a step that needed no work (cache hit) without running anything. */
  skip(label: string, reason: string): void {
    this.index += 1;
    this.skipped += 1;
    this.sink(`[${this.index}/${Math.max(this.total, this.index)}] ${label}: ${reason}`);
  }

  /** A free-form note under the current step. */
  note(line: string): void {
    this.sink(`      ${line}`);
  }

  /** The closing line: how many steps ran, how many were cached, and the total time. */
  summary(what: string): void {
    this.sink(
      `${what}: ${this.done} step${this.done === 1 ? "" : "s"} run, ${this.skipped} cached, in ${this.elapsedSeconds().toFixed(1)}s`,
    );
  }

  private failureFooter(): void {
    if (this.options.logFile) this.sink(`      full log: ${this.options.logFile}`);
    if (this.options.retryCommand) this.sink(`      to retry (finished steps are kept): ${this.options.retryCommand}`);
  }
}
