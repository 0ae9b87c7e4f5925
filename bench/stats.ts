/** Shared helpers for benchmarks: sample timing and summaries. Benchmarks print medians and ratios, never assert. */

export interface Summary {
  n: number;
  median: number;
  p95: number;
  min: number;
  max: number;
}

export function summarize(samples: number[]): Summary {
  if (samples.length === 0) return { n: 0, median: Number.NaN, p95: Number.NaN, min: Number.NaN, max: Number.NaN };
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) =>
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
  return { n: sorted.length, median: at(0.5), p95: at(0.95), min: sorted[0] as number, max: sorted.at(-1) as number };
}

/** Runs `fn` `warmup` times unmeasured, then `n` times, returning milliseconds per run. */
export async function timeRuns(n: number, warmup: number, fn: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

/** One line of a benchmark report. `value` is the headline figure (a median, a rate), in `unit`. */
export interface BenchRow {
  name: string;
  unit: string;
  value: number;
  p95?: number;
  n?: number;
  /** Ratio against a baseline row, with what it compares, e.g. "vs plain spawn". */
  ratio?: { value: number; against: string };
  goal?: string;
}

export interface BenchReport {
  title: string;
  rows: BenchRow[];
  notes: string[];
}

export interface Benchmark {
  name: string;
  description: string;
  run(): Promise<BenchReport>;
}

const fmt = (x: number | undefined) =>
  x === undefined || Number.isNaN(x) ? "–" : Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(2);

export function renderReport(report: BenchReport): string {
  const lines = [
    `## ${report.title}`,
    "",
    "| measure | median / value | p95 | n | ratio | goal |",
    "|---|---|---|---|---|---|",
  ];
  for (const r of report.rows) {
    const ratio = r.ratio ? `${r.ratio.value.toFixed(2)}× ${r.ratio.against}` : "";
    lines.push(`| ${r.name} | ${fmt(r.value)} ${r.unit} | ${fmt(r.p95)} | ${r.n ?? ""} | ${ratio} | ${r.goal ?? ""} |`);
  }
  if (report.notes.length > 0) lines.push("", ...report.notes.map((n) => `- ${n}`));
  return lines.join("\n");
}
