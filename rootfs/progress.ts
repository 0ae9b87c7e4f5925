/** Where progress lines go; the CLI passes stderr, tests pass a collector. */
export type ProgressSink = (line: string) => void;

/**
 * Step-counter progress for a build: "[3/9] debootstrap bookworm (minbase) … 12.3s". Plain lines, no
 * terminal control codes, so CI logs read the same as a terminal.
 */
export class Progress {
  private index = 0;
  private readonly started = performance.now();

  constructor(
    private total: number,
    private readonly sink: ProgressSink,
  ) {}

  /** Total elapsed seconds since the build started. */
  elapsedSeconds(): number {
    return (performance.now() - this.started) / 1000;
  }

  /** Adds steps discovered while building (a template's parent chain). */
  addSteps(n: number): void {
    this.total += n;
  }

  /** Runs one step, printing its number and label, then its duration or failure. */
  async step<T>(label: string, fn: () => Promise<T>): Promise<T> {
    this.index += 1;
    const tag = `[${this.index}/${Math.max(this.total, this.index)}]`;
    this.sink(`${tag} ${label} …`);
    const t0 = performance.now();
    try {
      const result = await fn();
      this.sink(
        `${tag} ${label}: done in ${((performance.now() - t0) / 1000).toFixed(1)}s (total ${this.elapsedSeconds().toFixed(1)}s)`,
      );
      return result;
    } catch (err) {
      this.sink(`${tag} ${label}: FAILED after ${((performance.now() - t0) / 1000).toFixed(1)}s`);
      throw err;
    }
  }

  /** Records a step that needed no work (cache hit) without running anything. */
  skip(label: string, reason: string): void {
    this.index += 1;
    this.sink(`[${this.index}/${Math.max(this.total, this.index)}] ${label}: ${reason}`);
  }

  /** A free-form note under the current step. */
  note(line: string): void {
    this.sink(`      ${line}`);
  }
}
