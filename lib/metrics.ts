/**
 * A small Prometheus registry: counters, gauges and histograms rendered in the text exposition format
 * (version 0.0.4). Hand-written rather than prom-client because prom-client needs Node (it reads
 * process and v8 statistics and imports node:* modules), and the edge also runs on Workers; the
 * format is a few lines of text. Pure: no node:* imports, usable by the edge (Node and Workers) and
 * the agent alike.
 */

/** Label names to values; every series of a metric has the metric's label names. */
export type Labels = Record<string, string>;

/** The content type of the text exposition format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * Series a metric keeps at most. Label values here come from a bounded set (route patterns, status
 * codes, outcomes), so this is a guard against a bug turning an id into a label, not a limit that
 * real use reaches; series past it are dropped and counted in `wrenn_metrics_dropped_series_total`.
 */
export const MAX_SERIES_PER_METRIC = 2_000;

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A label value as the exposition format writes it: backslash, double quote and newline escaped. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** HELP text as the exposition format writes it: backslash and newline escaped. */
export function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** A sample value: integers as they are, +Inf/-Inf/NaN spelled as Prometheus spells them. */
function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(value);
}

function labelText(names: readonly string[], values: readonly string[], extra?: [string, string]): string {
  const parts = names.map((name, i) => `${name}="${escapeLabelValue(values[i] ?? "")}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

interface Metric {
  readonly name: string;
  render(out: string[]): void;
}

/** Series of one metric, keyed by their label values in label-name order. */
class SeriesTable<T> {
  readonly #series = new Map<string, { values: string[]; state: T }>();
  constructor(
    readonly labelNames: readonly string[],
    readonly make: () => T,
    readonly onDrop: () => void,
  ) {}

  get(labels: Labels): T | undefined {
    const values = this.labelNames.map((name) => labels[name] ?? "");
    const key = values.join("\u0000");
    let entry = this.#series.get(key);
    if (entry === undefined) {
      if (this.#series.size >= MAX_SERIES_PER_METRIC) {
        this.onDrop();
        return undefined;
      }
      entry = { values, state: this.make() };
      this.#series.set(key, entry);
    }
    return entry.state;
  }

  entries(): Iterable<{ values: string[]; state: T }> {
    return this.#series.values();
  }

  clear(): void {
    this.#series.clear();
  }
}

/** A value that only goes up (requests served, deliveries made). */
export class Counter implements Metric {
  readonly #table: SeriesTable<{ value: number }>;
  constructor(
    readonly name: string,
    readonly help: string,
    labelNames: readonly string[],
    onDrop: () => void,
  ) {
    this.#table = new SeriesTable(labelNames, () => ({ value: 0 }), onDrop);
  }

  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0)) return;
    const series = this.#table.get(labels);
    if (series) series.value += by;
  }

  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} counter`);
    for (const { values, state } of this.#table.entries())
      out.push(`${this.name}${labelText(this.#table.labelNames, values)} ${formatValue(state.value)}`);
  }
}

/**
 * A value that goes up and down. Set directly, or read at scrape time from `collect` (pool sizes,
 * sandboxes by state), which replaces every series with what it returns.
 */
export class Gauge implements Metric {
  readonly #table: SeriesTable<{ value: number }>;
  constructor(
    readonly name: string,
    readonly help: string,
    labelNames: readonly string[],
    onDrop: () => void,
    readonly collect?: () => Array<{ labels?: Labels; value: number }>,
  ) {
    this.#table = new SeriesTable(labelNames, () => ({ value: 0 }), onDrop);
  }

  set(labels: Labels, value: number): void {
    const series = this.#table.get(labels);
    if (series) series.value = value;
  }

  render(out: string[]): void {
    if (this.collect) {
      this.#table.clear();
      for (const sample of this.collect()) this.set(sample.labels ?? {}, sample.value);
    }
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} gauge`);
    for (const { values, state } of this.#table.entries())
      out.push(`${this.name}${labelText(this.#table.labelNames, values)} ${formatValue(state.value)}`);
  }
}

/** Default latency buckets, in seconds: 5 ms to a minute. */
export const LATENCY_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] as const;

/** Observations counted into cumulative `le` buckets, with their sum and count. */
export class Histogram implements Metric {
  readonly #table: SeriesTable<{ buckets: number[]; sum: number; count: number }>;
  readonly buckets: readonly number[];
  constructor(
    readonly name: string,
    readonly help: string,
    labelNames: readonly string[],
    buckets: readonly number[],
    onDrop: () => void,
  ) {
    if (labelNames.includes("le")) throw new Error(`${name}: "le" is the histogram's own label`);
    this.buckets = [...buckets].sort((a, b) => a - b);
    this.#table = new SeriesTable(
      labelNames,
      () => ({ buckets: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 }),
      onDrop,
    );
  }

  observe(labels: Labels, value: number): void {
    if (Number.isNaN(value)) return;
    const series = this.#table.get(labels);
    if (!series) return;
    series.sum += value;
    series.count++;
    // Each observation lands in the first bucket that holds it; render() accumulates.
    const index = this.buckets.findIndex((le) => value <= le);
    if (index >= 0) series.buckets[index] = (series.buckets[index] ?? 0) + 1;
  }

  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} histogram`);
    const names = this.#table.labelNames;
    for (const { values, state } of this.#table.entries()) {
      let cumulative = 0;
      this.buckets.forEach((le, i) => {
        cumulative += state.buckets[i] ?? 0;
        out.push(`${this.name}_bucket${labelText(names, values, ["le", formatValue(le)])} ${cumulative}`);
      });
      out.push(`${this.name}_bucket${labelText(names, values, ["le", "+Inf"])} ${state.count}`);
      out.push(`${this.name}_sum${labelText(names, values)} ${formatValue(state.sum)}`);
      out.push(`${this.name}_count${labelText(names, values)} ${state.count}`);
    }
  }
}

/** The metrics of one process, rendered together for a scrape. */
export class MetricsRegistry {
  readonly #metrics = new Map<string, Metric>();
  #dropped = 0;
  readonly #onDrop = () => {
    this.#dropped++;
  };

  #add<T extends Metric>(metric: T, labelNames: readonly string[]): T {
    if (!METRIC_NAME.test(metric.name)) throw new Error(`bad metric name ${metric.name}`);
    for (const label of labelNames) if (!LABEL_NAME.test(label)) throw new Error(`bad label name ${label}`);
    if (this.#metrics.has(metric.name)) throw new Error(`metric ${metric.name} is registered twice`);
    this.#metrics.set(metric.name, metric);
    return metric;
  }

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.#add(new Counter(name, help, labelNames, this.#onDrop), labelNames);
  }

  gauge(
    name: string,
    help: string,
    labelNames: readonly string[] = [],
    collect?: () => Array<{ labels?: Labels; value: number }>,
  ): Gauge {
    return this.#add(new Gauge(name, help, labelNames, this.#onDrop, collect), labelNames);
  }

  histogram(
    name: string,
    help: string,
    labelNames: readonly string[] = [],
    buckets: readonly number[] = LATENCY_BUCKETS_SECONDS,
  ): Histogram {
    return this.#add(new Histogram(name, help, labelNames, buckets, this.#onDrop), labelNames);
  }

  /** The exposition text of every metric, ending in a newline. */
  render(): string {
    const out: string[] = [];
    for (const metric of this.#metrics.values()) metric.render(out);
    out.push(
      "# HELP wrenn_metrics_dropped_series_total Series not recorded because a metric reached its series limit.",
      "# TYPE wrenn_metrics_dropped_series_total counter",
      `wrenn_metrics_dropped_series_total ${this.#dropped}`,
    );
    return `${out.join("\n")}\n`;
  }
}
