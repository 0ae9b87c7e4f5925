import type { Tracer } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from "@opentelemetry/sdk-trace-base";
import { noopTracer } from "../tracing.js";

/**
 * Span export for the Node edge: an OTLP/HTTP (JSON) exporter when OTEL_EXPORTER_OTLP_ENDPOINT is
 * set, nothing otherwise. Without an endpoint no SDK object is made: the tracer is edge/tracing.ts's
 * no-op one, which still carries `traceparent` on to the agents. (The agent has its own twin,
 * agent/tracing.ts: the agent and the edge share no code but lib/, which takes no packages.)
 */

export interface NodeTracingOptions {
  /**
   * The OTLP/HTTP base URL (OTEL_EXPORTER_OTLP_ENDPOINT, e.g. `http://collector:4318`); spans are
   * POSTed to `<endpoint>/v1/traces`, as the OpenTelemetry specification says for this variable.
   */
  endpoint?: string | undefined;
  /** Milliseconds between exports of the spans ended meanwhile (default 1 s). */
  exportDelayMs?: number;
  /** An exporter to use instead of OTLP/HTTP (tests). */
  exporter?: SpanExporter;
}

export interface NodeTracing {
  /** Whether spans are recorded and exported. */
  readonly enabled: boolean;
  /** A tracer whose spans carry `service.name` = `serviceName` (one provider per name, one exporter for all). */
  tracerFor(serviceName: string): Tracer;
  /** Exports what is pending. */
  flush(): Promise<void>;
  /** Exports what is pending, then stops. */
  shutdown(): Promise<void>;
}

/** The OTLP/HTTP traces URL of a base endpoint. */
export function otlpTracesUrl(endpoint: string): string {
  return `${endpoint.replace(/\/+$/, "")}/v1/traces`;
}

/** Sets up the Node edge's span export; see NodeTracingOptions. */
export function startNodeTracing(options: NodeTracingOptions): NodeTracing {
  const exporter =
    options.exporter ??
    (options.endpoint
      ? new OTLPTraceExporter({ url: otlpTracesUrl(options.endpoint), timeoutMillis: 10_000 })
      : undefined);
  if (exporter === undefined) {
    return { enabled: false, tracerFor: () => noopTracer, flush: async () => {}, shutdown: async () => {} };
  }
  const providers = new Map<string, BasicTracerProvider>();
  return {
    enabled: true,
    tracerFor(serviceName) {
      let provider = providers.get(serviceName);
      if (provider === undefined) {
        provider = new BasicTracerProvider({
          resource: resourceFromAttributes({ "service.name": serviceName }),
          // Bounded: a burst of requests beyond the queue drops spans rather than growing memory.
          spanProcessors: [
            new BatchSpanProcessor(exporter, {
              scheduledDelayMillis: options.exportDelayMs ?? 1_000,
              maxQueueSize: 4_096,
              maxExportBatchSize: 512,
            }),
          ],
        });
        providers.set(serviceName, provider);
      }
      return provider.getTracer("wrenn");
    },
    async flush() {
      await Promise.all([...providers.values()].map((p) => p.forceFlush().catch(() => {})));
    },
    async shutdown() {
      await Promise.all([...providers.values()].map((p) => p.shutdown().catch(() => {})));
    },
  };
}
