import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NodeEdge } from "../../edge/node.js";
import { IMAGES_ROOT, requireImage, requireRoot, TEMPLATE } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { newTeamKey, startEdgeForAgent } from "../helpers/edge-stack.js";

/**
 * One trace from a REST request through the agent's RPC to envd (issue 22): the edge and the agent
 * export to an OTLP/HTTP receiver this test runs on loopback (JSON bodies, as the exporter sends
 * them); a REST exec that carries a client `traceparent` must yield an edge span, an agent span and
 * an envd span in that trace, each the child of the one before. Plus GET /metrics after the calls.
 */

interface ReceivedSpan {
  service: string;
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  attributes: Record<string, unknown>;
}

interface OtlpAttribute {
  key: string;
  value: { stringValue?: string; intValue?: string | number; boolValue?: boolean; doubleValue?: number };
}

interface OtlpBody {
  resourceSpans?: Array<{
    resource?: { attributes?: OtlpAttribute[] };
    scopeSpans?: Array<{
      spans?: Array<{
        name: string;
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        attributes?: OtlpAttribute[];
      }>;
    }>;
  }>;
}

function attributes(list: OtlpAttribute[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const { key, value } of list ?? []) {
    out[key] = value.stringValue ?? value.intValue ?? value.boolValue ?? value.doubleValue;
  }
  return out;
}

/** A minimal OTLP/HTTP trace receiver: decodes the JSON export requests and keeps the spans. */
async function startReceiver(): Promise<{ url: string; spans: ReceivedSpan[]; requests: number; server: Server }> {
  const state = { spans: [] as ReceivedSpan[], requests: 0 };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/v1/traces") {
        res.writeHead(404).end();
        return;
      }
      state.requests++;
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as OtlpBody;
      for (const rs of body.resourceSpans ?? []) {
        const service = String(attributes(rs.resource?.attributes)["service.name"] ?? "");
        for (const ss of rs.scopeSpans ?? []) {
          for (const span of ss.spans ?? []) {
            state.spans.push({
              service,
              name: span.name,
              traceId: span.traceId,
              spanId: span.spanId,
              parentSpanId: span.parentSpanId ?? "",
              attributes: attributes(span.attributes),
            });
          }
        }
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    get spans() {
      return state.spans;
    },
    get requests() {
      return state.requests;
    },
  };
}

const adminKey = `wrn_it_admin_${randomBytes(16).toString("hex")}`;
const metricsToken = randomBytes(16).toString("hex");

describe("traces across edge, agent and envd; edge metrics", () => {
  let receiver: Awaited<ReturnType<typeof startReceiver>> | undefined;
  let agent: AgentProcess | undefined;
  let edge: NodeEdge | undefined;
  let key = "";

  beforeAll(async () => {
    requireRoot();
    await requireImage();
    receiver = await startReceiver();
    const otlp = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url };
    agent = await startAgentProcess({ runtime: "namespace", rootDir: IMAGES_ROOT, env: otlp });
    edge = await startEdgeForAgent(agent, { adminKey, env: { ...otlp, WRENN_METRICS_TOKEN: metricsToken } });
    key = await newTeamKey(edge, adminKey, "tracing", "tracing-team");
  }, 120_000);

  afterAll(async () => {
    await edge?.close().catch(() => {});
    await agent?.stop().catch(() => {});
    await new Promise<void>((resolve) => (receiver ? receiver.server.close(() => resolve()) : resolve()));
  });

  const call = (method: string, path: string, json?: unknown, headers: Record<string, string> = {}) =>
    fetch(`${edge?.url}${path}`, {
      method,
      headers: { "x-api-key": key, "content-type": "application/json", ...headers },
      ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
    });

  it("a REST exec with a traceparent yields edge, agent and envd spans in that trace, parented in order", async () => {
    const created = await call("POST", "/v1/sandboxes", { template: TEMPLATE, timeoutSec: 300 });
    expect(created.status, await created.clone().text()).toBe(201);
    const sandboxId = ((await created.json()) as { id: string }).id;

    const traceId = randomBytes(16).toString("hex");
    const clientSpanId = randomBytes(8).toString("hex");
    const requestId = `req_trace_${randomBytes(6).toString("hex")}`;
    const exec = await call(
      "POST",
      `/v1/sandboxes/${sandboxId}/exec`,
      { cmd: "echo traced" },
      { traceparent: `00-${traceId}-${clientSpanId}-01`, "x-request-id": requestId },
    );
    expect(exec.status, await exec.clone().text()).toBe(200);
    expect(await exec.json()).toMatchObject({ stdout: "traced\n", exitCode: 0 });

    // The exporters send every second; wait for all three services' spans of this trace.
    const deadline = Date.now() + 15_000;
    const inTrace = () => (receiver?.spans ?? []).filter((s) => s.traceId === traceId);
    while (Date.now() < deadline) {
      const services = new Set(inTrace().map((s) => s.service));
      if (services.has("wrenn-edge") && services.has("wrenn-agent") && services.has("wrenn-envd")) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const spans = inTrace();
    const edgeSpan = spans.find((s) => s.service === "wrenn-edge");
    expect(edgeSpan, JSON.stringify(spans)).toBeDefined();
    expect(edgeSpan?.parentSpanId).toBe(clientSpanId);
    expect(edgeSpan?.name).toBe("POST /v1/sandboxes/:id/exec");
    expect(edgeSpan?.attributes).toMatchObject({
      "wrenn.sandbox.id": sandboxId,
      "wrenn.request.id": requestId,
      "http.response.status_code": 200,
    });

    const agentSpan = spans.find((s) => s.service === "wrenn-agent" && s.parentSpanId === edgeSpan?.spanId);
    expect(agentSpan, JSON.stringify(spans)).toBeDefined();
    expect(agentSpan?.name).toBe("HostAgent/Exec");
    expect(agentSpan?.attributes).toMatchObject({ "wrenn.sandbox.id": sandboxId });

    const envdSpans = spans.filter((s) => s.service === "wrenn-envd");
    expect(envdSpans.length, JSON.stringify(spans)).toBeGreaterThan(0);
    for (const span of envdSpans) {
      expect(span.parentSpanId).toBe(agentSpan?.spanId);
      expect(span.attributes).toMatchObject({ "wrenn.sandbox.id": sandboxId });
    }
    expect(envdSpans.map((s) => s.name)).toContain("envd process.Process/Start");

    // The agent's log line for that call carries the request id and the trace id.
    const log = (await agent?.log()) ?? "";
    const line = log
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === "rpc" && l.method === "Exec" && l.requestId === requestId);
    expect(line, log.slice(-4000)).toMatchObject({ traceId, sandboxId, code: "ok" });

    // A streamed exec (server-streaming RPC) is traced too: its span ends with the stream.
    const streamTrace = randomBytes(16).toString("hex");
    const streamed = await call(
      "POST",
      `/v1/sandboxes/${sandboxId}/exec/stream`,
      { cmd: "echo one; echo two" },
      { traceparent: `00-${streamTrace}-${randomBytes(8).toString("hex")}-01` },
    );
    expect(await streamed.text()).toMatch(/event: exit\ndata: \{"exitCode":0\}/);
    const streamDeadline = Date.now() + 15_000;
    const streamAgentSpan = () =>
      (receiver?.spans ?? []).find((s) => s.traceId === streamTrace && s.service === "wrenn-agent");
    while (!streamAgentSpan() && Date.now() < streamDeadline) await new Promise((r) => setTimeout(r, 200));
    expect(streamAgentSpan()?.name).toBe("HostAgent/ExecStream");
    expect(streamAgentSpan()?.attributes).toMatchObject({ "wrenn.sandbox.id": sandboxId });

    // The agent's own /metrics counts the RPC by method and code, next to its sandbox gauges.
    const agentMetrics = await fetch(`${agent?.url}/metrics`, { headers: { authorization: `Bearer ${agent?.token}` } });
    const agentText = await agentMetrics.text();
    expect(agentText).toMatch(/wrenn_agent_rpc_requests_total\{method="Exec",code="ok"\} [1-9]/);
    expect(agentText).toMatch(/wrenn_agent_rpc_duration_seconds_count\{method="Exec"\} [1-9]/);
  }, 120_000);

  it("GET /metrics counts requests by route pattern and status, and refuses without the token", async () => {
    for (let i = 0; i < 3; i++) await call("GET", `/v1/sandboxes/sbx_nothere${i}`);
    const refused = await fetch(`${edge?.url}/metrics`);
    expect(refused.status).toBe(401);
    const wrong = await fetch(`${edge?.url}/metrics`, { headers: { authorization: "Bearer wrong-token-000000" } });
    expect(wrong.status).toBe(401);
    const res = await fetch(`${edge?.url}/metrics`, { headers: { authorization: `Bearer ${metricsToken}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toContain('wrenn_edge_http_requests_total{method="GET",route="/v1/sandboxes/:id",status="404"} 3');
    expect(text).toContain(
      'wrenn_edge_http_requests_total{method="POST",route="/v1/sandboxes/:id/exec",status="200"} 1',
    );
    expect(text).toMatch(
      /wrenn_edge_http_request_duration_seconds_bucket\{method="POST",route="\/v1\/sandboxes\/:id\/exec",le="\+Inf"\} 1/,
    );
    expect(text).toContain('wrenn_edge_db_driver_info{driver="pglite"} 1');
    // Ids never become labels.
    expect(text).not.toMatch(/sbx_nothere/);
  }, 60_000);
});
