import {
  type Counter,
  type Gauge,
  type Histogram,
  LATENCY_BUCKETS_SECONDS,
  MetricsRegistry,
} from "../../lib/metrics.js";
import type { ReconcileSummary } from "../services/reconcile/sweep.js";

/** Connections of the database driver's pool, read at scrape time (node-postgres; PGlite has no pool). */
export interface DatabasePoolStats {
  total: number;
  idle: number;
  waiting: number;
}

/** Sweep durations run from a few milliseconds to the lease's minutes. */
const SWEEP_BUCKETS_SECONDS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300] as const;

/**
 * The edge's metrics (served by GET /metrics, edge/routes/metrics). One per process on Node; on
 * Workers one per isolate, so a scrape there sees that isolate's share only (docs/observability.md).
 */
export class EdgeMetrics {
  readonly registry = new MetricsRegistry();
  readonly httpRequests: Counter;
  readonly httpDuration: Histogram;
  readonly sweeps: Counter;
  readonly sweepDuration: Histogram;
  readonly sweepChanges: Counter;
  readonly sweepHostFailures: Counter;
  readonly sweepActionFailures: Counter;
  readonly webhookDeliveries: Counter;
  readonly webhookDeliveryDuration: Histogram;
  readonly databasePool: Gauge;
  #pool: (() => DatabasePoolStats) | undefined;
  #driver = "unknown";

  constructor() {
    const r = this.registry;
    this.httpRequests = r.counter(
      "wrenn_edge_http_requests_total",
      "HTTP requests answered, by method, route pattern (never a raw path) and status code.",
      ["method", "route", "status"],
    );
    this.httpDuration = r.histogram(
      "wrenn_edge_http_request_duration_seconds",
      "Time from a request's arrival to its response head (a streamed body may go on after), by method and route pattern.",
      ["method", "route"],
      LATENCY_BUCKETS_SECONDS,
    );
    this.sweeps = r.counter(
      "wrenn_edge_reconcile_sweeps_total",
      "Reconcile sweeps by outcome: ran, lease_held (another edge was sweeping) or failed.",
      ["outcome"],
    );
    this.sweepDuration = r.histogram(
      "wrenn_edge_reconcile_sweep_duration_seconds",
      "Duration of reconcile sweeps, by outcome.",
      ["outcome"],
      SWEEP_BUCKETS_SECONDS,
    );
    this.sweepChanges = r.counter(
      "wrenn_edge_reconcile_changes_total",
      "Sandbox rows the sweep changed (or host sandboxes it destroyed), by rule.",
      ["rule"],
    );
    this.sweepHostFailures = r.counter(
      "wrenn_edge_reconcile_host_failures_total",
      "Hosts a sweep could not reach (unreachable, timed out, refused the token).",
    );
    this.sweepActionFailures = r.counter(
      "wrenn_edge_reconcile_action_failures_total",
      "Agent calls of the sweep that failed (retried by the next sweep).",
    );
    this.webhookDeliveries = r.counter(
      "wrenn_edge_webhook_deliveries_total",
      "Webhook delivery attempts by outcome (delivered, failed, ...).",
      ["outcome"],
    );
    this.webhookDeliveryDuration = r.histogram(
      "wrenn_edge_webhook_delivery_duration_seconds",
      "Duration of webhook delivery attempts, by outcome.",
      ["outcome"],
      LATENCY_BUCKETS_SECONDS,
    );
    this.databasePool = r.gauge(
      "wrenn_edge_db_pool_connections",
      "Connections of the node-postgres pool by state: total, idle, waiting (clients queued for one). Absent on PGlite (one in-process connection) and Workers (a pool per request).",
      ["state"],
      () => {
        const stats = this.#pool?.();
        if (stats === undefined) return [];
        return [
          { labels: { state: "total" }, value: stats.total },
          { labels: { state: "idle" }, value: stats.idle },
          { labels: { state: "waiting" }, value: stats.waiting },
        ];
      },
    );
    r.gauge("wrenn_edge_db_driver_info", "The database driver this edge runs on (value always 1).", ["driver"], () => [
      { labels: { driver: this.#driver }, value: 1 },
    ]);
  }

  /** Names the database driver and, when it has a pool, where to read its sizes at scrape time. */
  watchDatabase(driver: string, pool?: () => DatabasePoolStats): void {
    this.#driver = driver;
    this.#pool = pool;
  }

  /** Records one webhook delivery attempt; for the webhook delivery loop. */
  webhookDelivery(outcome: string, seconds: number): void {
    this.webhookDeliveries.inc({ outcome });
    this.webhookDeliveryDuration.observe({ outcome }, seconds);
  }

  /** Runs one reconcile sweep and records its duration and outcome; the sweep's result or error passes through. */
  async observeSweep(
    sweep: () => Promise<ReconcileSummary>,
    now: () => number = () => performance.now(),
  ): Promise<ReconcileSummary> {
    const started = now();
    try {
      const summary = await sweep();
      const outcome = summary.ran ? "ran" : "lease_held";
      this.sweeps.inc({ outcome });
      this.sweepDuration.observe({ outcome }, (now() - started) / 1000);
      for (const [rule, count] of Object.entries(summary.changed))
        if (count > 0) this.sweepChanges.inc({ rule }, count);
      if (summary.hostsFailed > 0) this.sweepHostFailures.inc({}, summary.hostsFailed);
      if (summary.actionFailures > 0) this.sweepActionFailures.inc({}, summary.actionFailures);
      return summary;
    } catch (err) {
      this.sweeps.inc({ outcome: "failed" });
      this.sweepDuration.observe({ outcome: "failed" }, (now() - started) / 1000);
      throw err;
    }
  }
}
