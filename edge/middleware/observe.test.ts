import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addFakeHost, createEdgeHarness, type EdgeHarness } from "../../test/helpers/edge-app.js";
import { createApp } from "../app.js";
import type { AgentConnector } from "../clients/agent.js";
import type { App } from "../context.js";
import { EdgeMetrics } from "./metrics.js";
import { type EdgeObservability, SANDBOX_PROXY_ROUTE, UNMATCHED_ROUTE } from "./observe.js";

/**
 * The edge's metrics and request spans over the real app (PGlite, fake agents at the Connect
 * boundary): labels are route patterns, a client's traceparent is continued and passed to the agent.
 */

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const metricsToken = "metrics-token-0123456789";
let h: EdgeHarness;
let app: App;
let observability: EdgeObservability;
/** Headers the edge put on each agent client it made. */
const agentHeaders: Array<Record<string, string>> = [];

beforeAll(async () => {
  h = await createEdgeHarness();
  await addFakeHost(h);
  const fakes = h.agents;
  const recording: AgentConnector = {
    client: (host, requestId, headers) => {
      agentHeaders.push({ ...headers });
      return fakes.client(host, requestId, headers);
    },
    proxy: (...args) => fakes.proxy(...args),
  };
  observability = { metrics: new EdgeMetrics(), tracer: provider.getTracer("test"), metricsToken };
  app = createApp({ ...h.appDeps(), agents: recording }, observability);
}, 60_000);

afterAll(async () => {
  await h?.close();
});

const request = (method: string, path: string, headers: Record<string, string> = {}, json?: unknown) =>
  Promise.resolve(
    app.request(path, {
      method,
      headers: { ...headers, ...(json !== undefined ? { "content-type": "application/json" } : {}) },
      ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
    }),
  );

const scrape = async () => (await request("GET", "/metrics", { authorization: `Bearer ${metricsToken}` })).text();

describe("edge metrics and request spans", () => {
  it("labels requests by route pattern, never by path, and tells proxy and unmatched traffic apart", async () => {
    const team = await h.newTeam();
    const created = await request("POST", "/v1/sandboxes", { "x-api-key": team.key }, {});
    expect(created.status).toBe(201);
    const id = ((await created.json()) as { id: string }).id;
    await request("GET", `/v1/sandboxes/${id}`, { "x-api-key": team.key });
    await request("GET", "/v1/sandboxes/sbx_doesnotexist0000", { "x-api-key": team.key });
    await request("GET", "/v1/sandboxes/sbx_doesnotexist0000");
    await request("GET", "/no/such/route");
    await request("BREW", "/v1/sandboxes");
    await request("GET", "/", { "e2b-sandbox-id": "abcdefghij0123456789", "e2b-sandbox-port": "49983" });
    const text = await scrape();
    expect(text).toContain('wrenn_edge_http_requests_total{method="POST",route="/v1/sandboxes",status="201"} 1');
    expect(text).toContain('wrenn_edge_http_requests_total{method="GET",route="/v1/sandboxes/:id",status="200"} 1');
    expect(text).toContain('wrenn_edge_http_requests_total{method="GET",route="/v1/sandboxes/:id",status="404"} 1');
    expect(text).toContain('wrenn_edge_http_requests_total{method="GET",route="/v1/sandboxes/:id",status="401"} 1');
    expect(text).toContain(`wrenn_edge_http_requests_total{method="GET",route="${UNMATCHED_ROUTE}",status="404"} 1`);
    expect(SANDBOX_PROXY_ROUTE).toBe("(sandbox-proxy)");
    expect(text).toMatch(/wrenn_edge_http_requests_total\{method="GET",route="\(sandbox-proxy\)",status="\d+"\} 1/);
    expect(text).toContain('wrenn_edge_http_request_duration_seconds_count{method="GET",route="/v1/sandboxes/:id"} 3');
    expect(text).not.toContain(id);
    expect(text).not.toContain("doesnotexist");
    expect(text).not.toContain("/no/such/route");
    // A method nobody defined is counted, but not by its (client-chosen) name.
    expect(text).toMatch(/wrenn_edge_http_requests_total\{method="OTHER",route="[^"]+",status="\d+"\} 1/);
    expect(text).not.toContain("BREW");
  });

  it("continues the client's traceparent and hands its own span to the agent", async () => {
    const team = await h.newTeam();
    const created = await request("POST", "/v1/sandboxes", { "x-api-key": team.key }, {});
    const id = ((await created.json()) as { id: string }).id;
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    agentHeaders.length = 0;
    exporter.reset();
    const res = await request(
      "POST",
      `/v1/sandboxes/${id}/exec`,
      { "x-api-key": team.key, traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
      { cmd: "echo hi" },
    );
    expect(res.status).toBe(200);
    const span = exporter.getFinishedSpans().find((s) => s.name === "POST /v1/sandboxes/:id/exec");
    expect(span?.spanContext().traceId).toBe(traceId);
    expect(span?.parentSpanContext?.spanId).toBe("00f067aa0ba902b7");
    expect(span?.attributes).toMatchObject({ "wrenn.sandbox.id": id, "http.response.status_code": 200 });
    expect(agentHeaders.map((hd) => hd.traceparent)).toContain(`00-${traceId}-${span?.spanContext().spanId}-01`);
  });

  it("passes a client's traceparent on unchanged without a recording tracer, and adds none without one", async () => {
    const plain = createApp({
      ...h.appDeps(),
      agents: {
        client: (host, requestId, headers) => {
          agentHeaders.push({ ...headers });
          return h.agents.client(host, requestId);
        },
        proxy: (...args) => h.agents.proxy(...args),
      },
    });
    const team = await h.newTeam();
    const created = await plain.request("/v1/sandboxes", {
      method: "POST",
      headers: { "x-api-key": team.key, "content-type": "application/json" },
      body: "{}",
    });
    const id = ((await created.json()) as { id: string }).id;
    const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    agentHeaders.length = 0;
    await plain.request(`/v1/sandboxes/${id}/exec`, {
      method: "POST",
      headers: { "x-api-key": team.key, "content-type": "application/json", traceparent: incoming },
      body: JSON.stringify({ cmd: "echo hi" }),
    });
    expect(agentHeaders.map((hd) => hd.traceparent)).toEqual([incoming]);
    agentHeaders.length = 0;
    await plain.request(`/v1/sandboxes/${id}/exec`, {
      method: "POST",
      headers: { "x-api-key": team.key, "content-type": "application/json" },
      body: JSON.stringify({ cmd: "echo hi" }),
    });
    expect(agentHeaders.map((hd) => hd.traceparent)).toEqual([undefined]);
  });

  it("serves /metrics only with the token, and not at all without one configured", async () => {
    expect((await request("GET", "/metrics")).status).toBe(401);
    expect((await request("GET", "/metrics", { authorization: "Bearer nope-nope-nope-nope" })).status).toBe(401);
    const ok = await request("GET", "/metrics", { authorization: `Bearer ${metricsToken}` });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const off = createApp(h.appDeps());
    const res = await off.request("/metrics", { headers: { authorization: `Bearer ${metricsToken}` } });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("NOT_FOUND");
  });

  it("records reconcile sweeps by outcome (failed ones too) and webhook attempts", async () => {
    const metrics = new EdgeMetrics();
    const summary = {
      ran: true,
      hosts: 2,
      hostsSeen: 1,
      hostsFailed: 1,
      hostsSkipped: 0,
      hostsUnhealthy: [],
      hostsRecovered: [],
      changed: { expired: 2 } as never,
      destroyedOnHost: 0,
      actionFailures: 0,
      durationMs: 3,
    };
    await metrics.observeSweep(async () => summary);
    await metrics.observeSweep(async () => ({ ...summary, ran: false, hostsFailed: 0, changed: {} as never }));
    await expect(metrics.observeSweep(async () => Promise.reject(new Error("db down")))).rejects.toThrow("db down");
    const text = metrics.registry.render();
    expect(text).toContain('wrenn_edge_reconcile_sweeps_total{outcome="ran"} 1');
    expect(text).toContain('wrenn_edge_reconcile_sweeps_total{outcome="lease_held"} 1');
    expect(text).toContain('wrenn_edge_reconcile_sweeps_total{outcome="failed"} 1');
    expect(text).toContain('wrenn_edge_reconcile_changes_total{rule="expired"} 2');
    expect(text).toContain("wrenn_edge_reconcile_host_failures_total 1");
    expect(text).toContain('wrenn_edge_reconcile_sweep_duration_seconds_count{outcome="failed"} 1');
    metrics.webhookDelivery("delivered", 0.02);
    metrics.webhookDelivery("failed", 3);
    const after = metrics.registry.render();
    expect(after).toContain('wrenn_edge_webhook_deliveries_total{outcome="delivered"} 1');
    expect(after).toContain('wrenn_edge_webhook_delivery_duration_seconds_bucket{outcome="failed",le="2.5"} 0');
    expect(after).toContain('wrenn_edge_webhook_delivery_duration_seconds_bucket{outcome="failed",le="5"} 1');
  });
});
