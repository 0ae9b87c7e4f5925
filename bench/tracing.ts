import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Hono } from "hono";
import { createApp } from "../edge/app.js";
import type { AppEnv } from "../edge/context.js";
import { noopLogger } from "../edge/logger.js";
import { EdgeMetrics } from "../edge/middleware/metrics.js";
import { type EdgeObservability, observe } from "../edge/middleware/observe.js";
import { startNodeTracing } from "../edge/node/tracing.js";
import type { ServiceContext } from "../edge/services/context.js";
import { noopTracer } from "../edge/tracing.js";
import { addFakeHost, createEdgeHarness } from "../test/helpers/edge-app.js";
import { type Benchmark, type BenchRow, summarize, timeRuns } from "./stats.js";

/**
 * What tracing costs an edge request: `POST /v1/sandboxes/{id}/exec` through the whole app (auth,
 * PGlite, the in-memory agent at the Connect boundary), in process, with tracing off (no endpoint),
 * off with a client traceparent passed through, and on (spans batched to an OTLP/HTTP receiver on
 * loopback that drains each export). The metrics middleware runs in all three.
 */

const runs = 1500;

/**
 * The middleware alone: a bare Hono app (a stand-in for `init`, the observe middleware, one route
 * with an `:id`), so the cost of the span and the metrics is not lost in a request's milliseconds.
 */
function bareApp(observability: EdgeObservability) {
  const app = new Hono<AppEnv>();
  const services = { logger: noopLogger, agents: {} } as unknown as ServiceContext;
  app.use("*", async (c, next) => {
    c.set("requestId", "req_bench000000000000");
    c.set("logger", noopLogger);
    c.set("services", services);
    await next();
  });
  app.use("*", observe(observability));
  app.use("*", (_c, next) => next());
  app.use("*", (_c, next) => next());
  app.get("/v1/sandboxes/:id", (c) => c.json({ id: c.req.param("id") }));
  return app;
}
const warmup = 200;

export const benchmark: Benchmark = {
  name: "tracing",
  description: "edge request latency with tracing off, propagating, and exporting over OTLP/HTTP",
  async run() {
    let exports = 0;
    const receiver = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        exports++;
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    const endpoint = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    const h = await createEdgeHarness();
    const tracing = startNodeTracing({ endpoint });
    try {
      await addFakeHost(h);
      const team = await h.newTeam();
      const created = await h.request("POST", "/v1/sandboxes", { key: team.key, json: {} });
      const id = ((await created.json()) as { id: string }).id;
      const appWith = (observability: EdgeObservability) => createApp(h.appDeps(), observability);
      const off = appWith({ metrics: new EdgeMetrics(), tracer: noopTracer });
      const on = appWith({ metrics: new EdgeMetrics(), tracer: tracing.tracerFor("wrenn-edge") });
      const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
      const exec =
        (app: typeof off, extra: Record<string, string> = {}) =>
        async () => {
          const res = await app.request(`/v1/sandboxes/${id}/exec`, {
            method: "POST",
            headers: { "x-api-key": team.key, "content-type": "application/json", ...extra },
            body: '{"cmd":"echo hi"}',
          });
          if (res.status !== 200) throw new Error(`exec answered ${res.status}`);
          await res.arrayBuffer();
        };
      // Interleaved request by request, so drift in the machine's load falls on all three alike.
      const samples = { off: [] as number[], propagate: [] as number[], on: [] as number[] };
      await timeRuns(0, warmup, exec(off));
      await timeRuns(0, warmup, exec(on, { traceparent }));
      for (let i = 0; i < runs; i++) {
        samples.off.push(...(await timeRuns(1, 0, exec(off))));
        samples.propagate.push(...(await timeRuns(1, 0, exec(off, { traceparent }))));
        samples.on.push(...(await timeRuns(1, 0, exec(on, { traceparent }))));
      }
      // The middleware alone, interleaved request by request.
      const bare = {
        off: bareApp({ metrics: new EdgeMetrics(), tracer: noopTracer }),
        on: bareApp({ metrics: new EdgeMetrics(), tracer: tracing.tracerFor("wrenn-edge") }),
      };
      const get =
        (app: typeof bare.off, extra: Record<string, string> = {}) =>
        async () => {
          const res = await app.request("/v1/sandboxes/sbx_0123456789", { headers: extra });
          await res.arrayBuffer();
        };
      const bareRuns = 20_000;
      const bareSamples = { off: [] as number[], propagate: [] as number[], on: [] as number[] };
      await timeRuns(0, 2_000, get(bare.off));
      await timeRuns(0, 2_000, get(bare.on, { traceparent }));
      for (let i = 0; i < bareRuns; i++) {
        bareSamples.off.push(...(await timeRuns(1, 0, get(bare.off))));
        bareSamples.propagate.push(...(await timeRuns(1, 0, get(bare.off, { traceparent }))));
        bareSamples.on.push(...(await timeRuns(1, 0, get(bare.on, { traceparent }))));
      }
      await tracing.shutdown();
      const bareOff = summarize(bareSamples.off);
      const bareRow = (name: string, s: number[]): BenchRow => {
        const stats = summarize(s);
        return {
          name,
          unit: "µs",
          value: stats.median * 1000,
          p95: stats.p95 * 1000,
          n: stats.n,
          ratio: { value: stats.median / bareOff.median, against: "vs tracing off" },
        };
      };
      const offStats = summarize(samples.off);
      const row = (name: string, s: number[]): BenchRow => {
        const stats = summarize(s);
        return {
          name,
          unit: "ms",
          value: stats.median,
          p95: stats.p95,
          n: stats.n,
          ratio: { value: stats.median / offStats.median, against: "vs tracing off" },
        };
      };
      return {
        title: "Edge request latency and tracing (POST /v1/sandboxes/{id}/exec, in-memory agent)",
        rows: [
          { name: "tracing off", unit: "ms", value: offStats.median, p95: offStats.p95, n: offStats.n },
          row("off, client traceparent passed on", samples.propagate),
          { ...row("on, spans exported over OTLP/HTTP", samples.on), goal: "≤ 1.10× off" },
          {
            name: "bare app + middleware, tracing off",
            unit: "µs",
            value: bareOff.median * 1000,
            p95: bareOff.p95 * 1000,
            n: bareOff.n,
          },
          bareRow("bare app + middleware, traceparent passed on", bareSamples.propagate),
          bareRow("bare app + middleware, spans exported", bareSamples.on),
        ],
        notes: [`${exports} OTLP export requests received (batched every second).`],
      };
    } finally {
      await tracing.shutdown();
      await h.close();
      await new Promise<void>((resolve) => receiver.close(() => resolve()));
    }
  },
};
