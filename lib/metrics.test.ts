import { describe, expect, it } from "vitest";
import { escapeHelp, escapeLabelValue, MAX_SERIES_PER_METRIC, MetricsRegistry } from "./metrics.js";

/** The Prometheus text exposition (format 0.0.4) of the hand-written registry shared by edge and agent. */

describe("metrics exposition", () => {
  it("renders counters with HELP and TYPE, one line per label set", () => {
    const r = new MetricsRegistry();
    const c = r.counter("wrenn_test_total", "Things counted.", ["route", "status"]);
    c.inc({ route: "/v1/sandboxes/:id", status: "200" });
    c.inc({ route: "/v1/sandboxes/:id", status: "200" }, 2);
    c.inc({ route: "/v1/sandboxes", status: "201" });
    c.inc({ route: "/v1/sandboxes", status: "201" }, -5);
    const text = r.render();
    expect(text).toContain("# HELP wrenn_test_total Things counted.\n# TYPE wrenn_test_total counter\n");
    expect(text).toContain('wrenn_test_total{route="/v1/sandboxes/:id",status="200"} 3\n');
    // A negative increment is ignored: counters only go up.
    expect(text).toContain('wrenn_test_total{route="/v1/sandboxes",status="201"} 1\n');
    expect(text.endsWith("\n")).toBe(true);
  });

  it("renders histograms with cumulative le buckets, +Inf, sum and count", () => {
    const r = new MetricsRegistry();
    const h = r.histogram("wrenn_test_seconds", "Latency.", ["route"], [0.1, 0.5, 1]);
    for (const v of [0.05, 0.1, 0.3, 0.7, 5]) h.observe({ route: "/a" }, v);
    const lines = r
      .render()
      .split("\n")
      .filter((l) => l.startsWith("wrenn_test_seconds"));
    expect(lines).toEqual([
      'wrenn_test_seconds_bucket{route="/a",le="0.1"} 2',
      'wrenn_test_seconds_bucket{route="/a",le="0.5"} 3',
      'wrenn_test_seconds_bucket{route="/a",le="1"} 4',
      'wrenn_test_seconds_bucket{route="/a",le="+Inf"} 5',
      'wrenn_test_seconds_sum{route="/a"} 6.15',
      'wrenn_test_seconds_count{route="/a"} 5',
    ]);
  });

  it("escapes label values and help text as the format requires", () => {
    expect(escapeLabelValue('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
    expect(escapeHelp("line\\one\ntwo")).toBe("line\\\\one\\ntwo");
    const r = new MetricsRegistry();
    r.counter("wrenn_esc_total", "Help with a\nnewline.", ["v"]).inc({ v: 'x"}\n' });
    const text = r.render();
    expect(text).toContain("# HELP wrenn_esc_total Help with a\\nnewline.");
    expect(text).toContain('wrenn_esc_total{v="x\\"}\\n"} 1');
  });

  it("reads gauges from their collector at each scrape", () => {
    const r = new MetricsRegistry();
    let idle = 3;
    r.gauge("wrenn_pool", "Pool.", ["state"], () => [{ labels: { state: "idle" }, value: idle }]);
    expect(r.render()).toContain('wrenn_pool{state="idle"} 3');
    idle = 1;
    expect(r.render()).toContain('wrenn_pool{state="idle"} 1');
  });

  it("refuses bad names and duplicate metrics, and caps series per metric", () => {
    const r = new MetricsRegistry();
    expect(() => r.counter("bad-name", "x")).toThrow(/bad metric name/);
    expect(() => r.counter("ok_total", "x", ["bad-label"])).toThrow(/bad label name/);
    r.counter("dup_total", "x");
    expect(() => r.counter("dup_total", "x")).toThrow(/twice/);
    expect(() => r.histogram("h_seconds", "x", ["le"])).toThrow(/le/);
    const c = r.counter("many_total", "x", ["id"]);
    for (let i = 0; i < MAX_SERIES_PER_METRIC + 10; i++) c.inc({ id: String(i) });
    const text = r.render();
    expect(text.split("\n").filter((l) => l.startsWith("many_total{")).length).toBe(MAX_SERIES_PER_METRIC);
    expect(text).toContain("wrenn_metrics_dropped_series_total 10");
  });
});
