import { type Counter, type Histogram, LATENCY_BUCKETS_SECONDS, MetricsRegistry } from "../lib/metrics.js";
import type { ManagerObserver } from "./sandboxes/manager.js";

/** Prometheus text exposition of the agent's few metrics, without a client library. */

const CREATE_BUCKETS = [0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30, 60];

export class AgentMetrics implements ManagerObserver {
  readonly #createCounts = new Array<number>(CREATE_BUCKETS.length).fill(0);
  #createSum = 0;
  #createCount = 0;
  /** The RPC metrics, on the registry the edge uses too (lib/metrics.ts). */
  readonly #registry = new MetricsRegistry();
  readonly #rpcs: Counter = this.#registry.counter(
    "wrenn_agent_rpc_requests_total",
    "HostAgentService RPCs served, by method and Connect code (ok on success).",
    ["method", "code"],
  );
  readonly #rpcSeconds: Histogram = this.#registry.histogram(
    "wrenn_agent_rpc_duration_seconds",
    "Time from an RPC's arrival to its answer (a stream's last message), by method.",
    ["method"],
    LATENCY_BUCKETS_SECONDS,
  );

  /** Records one served RPC (agent/tracing.ts calls it with the span's outcome). */
  rpc(method: string, code: string, seconds: number): void {
    this.#rpcs.inc({ method, code });
    this.#rpcSeconds.observe({ method }, seconds);
  }

  createSeconds(seconds: number): void {
    this.#createSum += seconds;
    this.#createCount++;
    CREATE_BUCKETS.forEach((le, i) => {
      if (seconds <= le) this.#createCounts[i] = (this.#createCounts[i] ?? 0) + 1;
    });
  }

  render(state: {
    byStatus: Record<string, number>;
    slotsInUse: number;
    capacity: { maxSandboxes: number; vcpus: number; memoryMb: number };
  }): string {
    const lines = [
      "# HELP wrenn_agent_sandboxes Sandboxes on this host by state.",
      "# TYPE wrenn_agent_sandboxes gauge",
      ...Object.entries(state.byStatus).map(([s, n]) => `wrenn_agent_sandboxes{state="${s}"} ${n}`),
      "# HELP wrenn_agent_create_seconds Time from CreateSandbox to a ready envd.",
      "# TYPE wrenn_agent_create_seconds histogram",
      ...CREATE_BUCKETS.map((le, i) => `wrenn_agent_create_seconds_bucket{le="${le}"} ${this.#createCounts[i] ?? 0}`),
      `wrenn_agent_create_seconds_bucket{le="+Inf"} ${this.#createCount}`,
      `wrenn_agent_create_seconds_sum ${this.#createSum}`,
      `wrenn_agent_create_seconds_count ${this.#createCount}`,
      "# HELP wrenn_agent_slots_in_use Network slots in use.",
      "# TYPE wrenn_agent_slots_in_use gauge",
      `wrenn_agent_slots_in_use ${state.slotsInUse}`,
      "# HELP wrenn_agent_capacity_sandboxes Most sandboxes this host runs at once.",
      "# TYPE wrenn_agent_capacity_sandboxes gauge",
      `wrenn_agent_capacity_sandboxes ${state.capacity.maxSandboxes}`,
    ];
    return `${lines.join("\n")}\n${this.#registry.render()}`;
  }
}
