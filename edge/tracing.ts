import {
  type Context,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";

/**
 * The edge's W3C trace context, on the OpenTelemetry API and propagator alone (no SDK, no node:*),
 * so the edge on Workers uses it too. Contexts are passed explicitly (extract from a request's
 * headers, start a span under it, inject into the agent call's headers) rather than through a global
 * context manager, which Workers lack. Exporting spans is edge/node/tracing.ts's business (Node only).
 */

const propagator = new W3CTraceContextPropagator();

const headersGetter: TextMapGetter<(name: string) => string | null | undefined> = {
  keys: () => ["traceparent", "tracestate"],
  get: (get, key) => get(key) ?? undefined,
};

const recordSetter: TextMapSetter<Record<string, string>> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

/**
 * The context a request's `traceparent`/`tracestate` headers name (the caller's span as the remote
 * parent); the root context when they are missing or malformed, so the request starts a new trace.
 */
export function contextFromHeaders(get: (name: string) => string | null | undefined): Context {
  return propagator.extract(ROOT_CONTEXT, get, headersGetter);
}

/** The `traceparent` (and `tracestate`) headers naming `span` as the parent of the next hop. */
export function traceHeadersOf(span: Span, parent: Context = ROOT_CONTEXT): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagator.inject(trace.setSpan(parent, span), carrier, recordSetter);
  return carrier;
}

/** The headers for the next hop from a context (its active span); empty when it holds none. */
export function traceHeadersFrom(ctx: Context): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagator.inject(ctx, carrier, recordSetter);
  return carrier;
}

/**
 * A tracer that records nothing: a span started under a remote parent carries that parent's ids on
 * (so `traceparent` still reaches the next hop unchanged) and costs an object allocation. What every
 * process uses when OTEL_EXPORTER_OTLP_ENDPOINT is unset. A provider of our own with no delegate,
 * not the global one, so nothing else in the process can turn it into a recording tracer.
 */
export const noopTracer: Tracer = new ProxyTracerProvider().getTracer("wrenn");

/** Span attribute naming the sandbox a span is about (same name on edge, agent and envd spans). */
export const SANDBOX_ID_ATTRIBUTE = "wrenn.sandbox.id";
/** Span attribute carrying the edge's request id. */
export const REQUEST_ID_ATTRIBUTE = "wrenn.request.id";
