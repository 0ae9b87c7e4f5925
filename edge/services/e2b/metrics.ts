import type { TeamContext } from "../context.js";
import { NotFoundError, ServiceError } from "../errors.js";
import { BodyTooLargeError, readJsonLimited } from "../files/bounded-read.js";
import { envdAnswerMaxBytes, envdFailure, envdHeaders, envdPort, proxyUnreachable } from "../files/envd-http.js";
import { loadPlacedSandbox } from "../sandboxes/load.js";

/** One resource sample of a sandbox, in E2B's `SandboxMetric` shape. */
export interface SandboxMetric {
  /** RFC 3339 (deprecated by E2B, still read by the SDK). */
  timestamp: string;
  timestampUnix: number;
  cpuCount: number;
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  memCache: number;
  diskUsed: number;
  diskTotal: number;
}

function numberField(source: Record<string, unknown>, name: string): number {
  const value = source[name];
  return typeof value === "number" && Number.isFinite(value) ? value : 0;
}

/**
 * The sandbox's current resource use, sampled from envd's `/metrics` through the agent's proxy.
 * E2B keeps a history; Wrenn keeps none, so the answer is one sample while the sandbox runs and
 * none while it is paused or in transition.
 */
export async function sandboxMetrics(ctx: TeamContext, sandboxId: string): Promise<SandboxMetric[]> {
  const placed = await loadPlacedSandbox(ctx, sandboxId);
  const state = placed.sandbox.state;
  if (state === "stopped" || state === "error") throw new NotFoundError("sandbox", sandboxId);
  if (state !== "running") return [];
  let res: Response;
  try {
    res = await ctx.agents.proxy(placed.target, sandboxId, envdPort, "/metrics", {
      method: "GET",
      headers: await envdHeaders(ctx, placed),
      requestId: ctx.requestId,
    });
  } catch (err) {
    throw proxyUnreachable(err, "read metrics");
  }
  if (!res.ok) throw await envdFailure(res, "read", "metrics");
  let body: unknown;
  try {
    body = await readJsonLimited(res, envdAnswerMaxBytes);
  } catch (err) {
    if (err instanceof BodyTooLargeError) {
      throw new ServiceError("AGENT_ERROR", `read metrics: envd's answer is larger than ${err.limit} bytes`);
    }
    body = undefined;
  }
  if (!body || typeof body !== "object") {
    throw new ServiceError("AGENT_ERROR", "read metrics: envd answered something that is not a metrics object");
  }
  const sample = body as Record<string, unknown>;
  const ts = numberField(sample, "ts") || Math.floor(ctx.now().getTime() / 1000);
  return [
    {
      timestamp: new Date(ts * 1000).toISOString(),
      timestampUnix: ts,
      cpuCount: numberField(sample, "cpu_count"),
      cpuUsedPct: numberField(sample, "cpu_used_pct"),
      memUsed: numberField(sample, "mem_used"),
      memTotal: numberField(sample, "mem_total"),
      memCache: numberField(sample, "mem_cache"),
      diskUsed: numberField(sample, "disk_used"),
      diskTotal: numberField(sample, "disk_total"),
    },
  ];
}
