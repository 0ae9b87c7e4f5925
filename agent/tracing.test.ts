import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { context, trace } from "@opentelemetry/api";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Process } from "../proto/gen/envd/process/process_pb.js";
import { serverTimingInterceptor } from "./envd/timing.js";
import { EnvdClient } from "./envd-client.js";
import { type AgentTracing, contextFromRequest, envdReportedMs, startAgentTracing } from "./tracing.js";

/**
 * The agent's envd spans against a stand-in envd at the Connect boundary (process.Process/Start
 * answered by a handler with envd's own server-timing interceptor): the span is the child of the
 * active span, its ids are the ones the stand-in receives in `traceparent`, and envd's reported time
 * lands on it as an attribute; with no exporter the RPC's traceparent still reaches envd unchanged.
 */

let server: Server;
let port = 0;
const seenTraceparents: string[] = [];
const exporter = new InMemorySpanExporter();
let tracing: AgentTracing;

beforeAll(async () => {
  tracing = startAgentTracing({ exporter, exportDelayMs: 10 });
  const handler = connectNodeAdapter({
    interceptors: [serverTimingInterceptor],
    routes: (router: ConnectRouter) =>
      router.service(Process, {
        async *start(_req, ctx) {
          seenTraceparents.push(ctx.requestHeader.get("traceparent") ?? "");
          yield { event: { event: { case: "start", value: { pid: 7 } } } };
          yield { event: { event: { case: "end", value: { exitCode: 0, exited: true, status: "exit status 0" } } } };
        },
        async sendSignal(_req, ctx) {
          seenTraceparents.push(ctx.requestHeader.get("traceparent") ?? "");
          return {};
        },
      }),
  });
  server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  await tracing.shutdown();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe("agent tracing", () => {
  it("records an envd span per Connect call, child of the active span, with envd's reported time", async () => {
    const client = new EnvdClient("127.0.0.1", "", port, tracing.envd);
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const parent = contextFromRequest({ traceparent: `00-${traceId}-b7ad6b7169203331-01` });
    const rpcSpan = tracing.agent.startSpan("HostAgent/Exec", {}, parent);
    await context.with(trace.setSpan(parent, rpcSpan), async () => {
      for await (const _ of client.process.start({ process: { cmd: "true", args: [], envs: {} } })) {
        // drain
      }
      await client.process.sendSignal({});
    });
    rpcSpan.end();
    await tracing.flush();
    const spans = exporter.getFinishedSpans();
    const envd = spans.find((s) => s.name === "envd process.Process/Start");
    expect(envd, spans.map((s) => s.name).join()).toBeDefined();
    expect(envd?.spanContext().traceId).toBe(traceId);
    expect(envd?.parentSpanContext?.spanId).toBe(rpcSpan.spanContext().spanId);
    expect(envd?.resource.attributes["service.name"]).toBe("wrenn-envd");
    const signal = spans.find((s) => s.name === "envd process.Process/SendSignal");
    expect(signal?.parentSpanContext?.spanId).toBe(rpcSpan.spanContext().spanId);
    // Each call's traceparent names its own envd span (what envd logs), in the RPC's trace.
    expect(seenTraceparents).toEqual([
      `00-${traceId}-${envd?.spanContext().spanId}-01`,
      `00-${traceId}-${signal?.spanContext().spanId}-01`,
    ]);
    // envd's own time (server-timing trailer) on a call whose answer was read to the end.
    expect(typeof signal?.attributes["wrenn.envd.reported_ms"]).toBe("number");
  });

  it("passes the active traceparent on unchanged when nothing is exported", async () => {
    const noop = startAgentTracing({});
    const client = new EnvdClient("127.0.0.1", "", port, noop.envd);
    const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const parent = contextFromRequest({ traceparent: incoming });
    const rpcSpan = noop.agent.startSpan("HostAgent/Exec", {}, parent);
    seenTraceparents.length = 0;
    await context.with(trace.setSpan(parent, rpcSpan), () => client.process.sendSignal({}));
    expect(rpcSpan.isRecording()).toBe(false);
    expect(seenTraceparents).toEqual([incoming]);
  });

  it("reads only a well-formed envd server-timing entry", () => {
    expect(envdReportedMs("envd;dur=12.5")).toBe(12.5);
    expect(envdReportedMs("db;dur=3, envd;dur=4")).toBe(4);
    expect(envdReportedMs("envd;dur=-1")).toBeUndefined();
    expect(envdReportedMs("envd;dur=1e99")).toBeUndefined();
    expect(envdReportedMs(null)).toBeUndefined();
  });
});
