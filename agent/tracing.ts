import type { IncomingHttpHeaders } from "node:http";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  type Context,
  context,
  createContextKey,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from "@opentelemetry/sdk-trace-base";
import type { Logger } from "./logger.js";

/**
 * The agent's part of one trace from the REST request to envd (docs/observability.md):
 *
 * - every RPC gets a server span, child of the edge's span named by the request's `traceparent`,
 *   with the sandbox id as an attribute, and one log line carrying the request and trace ids;
 * - every Connect call to envd gets a span of service `wrenn-envd`, child of the RPC span, whose id
 *   envd receives as the parent in its `traceparent` (and logs). The agent records that span, not
 *   envd: a guest is hostile and must not reach the collector or make the host export what it says.
 *   envd reports only its own handling time (`server-timing: envd;dur=<ms>` in its trailers), which
 *   the agent puts on the span as an attribute; the span's bounds are the call the agent observed.
 *
 * With OTEL_EXPORTER_OTLP_ENDPOINT unset the tracers are no-ops: the spans cost an allocation and the
 * `traceparent` of the edge passes through to envd unchanged.
 */

/** Span attribute naming the sandbox a span is about (the edge's spans use the same name). */
export const SANDBOX_ID_ATTRIBUTE = "wrenn.sandbox.id";

const propagator = new W3CTraceContextPropagator();
/** A tracer that records nothing (a span under a remote parent passes its ids on). */
export const noopTracer: Tracer = new ProxyTracerProvider().getTracer("wrenn");
const SANDBOX_KEY = createContextKey("wrenn.sandbox.id");
/** The envd spans still open under an RPC: ended with it at the latest (a stream its reader left). */
const OPEN_SPANS_KEY = createContextKey("wrenn.open-envd-spans");

/** RPCs the edge calls on a timer; their log line is debug so that polling does not fill the log. */
const POLLED_METHODS = new Set(["PullTelemetry", "ListSandboxes", "GetHostInfo", "GetMetrics"]);

export interface AgentTracing {
  /** Whether spans are recorded and exported. */
  readonly enabled: boolean;
  /** The agent's own spans (service.name `wrenn-agent`). */
  readonly agent: Tracer;
  /** The spans of envd calls, recorded by the agent (service.name `wrenn-envd`). */
  readonly envd: Tracer;
  /** Exports what is pending. */
  flush(): Promise<void>;
  /** Exports what is pending, then stops. */
  shutdown(): Promise<void>;
}

export interface AgentTracingOptions {
  /** OTLP/HTTP base URL (OTEL_EXPORTER_OTLP_ENDPOINT); spans go to `<endpoint>/v1/traces`. */
  endpoint?: string | undefined;
  /** Milliseconds between exports (default 1 s). */
  exportDelayMs?: number;
  /** An exporter to use instead of OTLP/HTTP (tests). */
  exporter?: SpanExporter;
}

/**
 * Sets tracing up for the agent process. Registers an AsyncLocalStorage context manager either way
 * (the RPC's span context must reach the envd client many awaits deep, also when only propagating).
 */
export function startAgentTracing(options: AgentTracingOptions): AgentTracing {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  const exporter =
    options.exporter ??
    (options.endpoint
      ? new OTLPTraceExporter({ url: `${options.endpoint.replace(/\/+$/, "")}/v1/traces`, timeoutMillis: 10_000 })
      : undefined);
  if (exporter === undefined) {
    return { enabled: false, agent: noopTracer, envd: noopTracer, flush: async () => {}, shutdown: async () => {} };
  }
  const provider = (serviceName: string) =>
    new BasicTracerProvider({
      resource: resourceFromAttributes({ "service.name": serviceName }),
      // Bounded: spans beyond the queue are dropped rather than held.
      spanProcessors: [
        new BatchSpanProcessor(exporter, {
          scheduledDelayMillis: options.exportDelayMs ?? 1_000,
          maxQueueSize: 4_096,
          maxExportBatchSize: 512,
        }),
      ],
    });
  const agentProvider = provider("wrenn-agent");
  const envdProvider = provider("wrenn-envd");
  return {
    enabled: true,
    agent: agentProvider.getTracer("wrenn"),
    envd: envdProvider.getTracer("wrenn"),
    flush: async () => {
      await Promise.all([agentProvider.forceFlush(), envdProvider.forceFlush()].map((p) => p.catch(() => {})));
    },
    shutdown: async () => {
      await agentProvider.forceFlush().catch(() => {});
      await envdProvider.forceFlush().catch(() => {});
      await Promise.all([agentProvider.shutdown(), envdProvider.shutdown()].map((p) => p.catch(() => {})));
    },
  };
}

const nodeHeadersGetter: TextMapGetter<IncomingHttpHeaders> = {
  keys: (headers) => Object.keys(headers),
  get: (headers, key) => headers[key],
};

const connectHeadersSetter: TextMapSetter<Headers> = {
  set: (headers, key, value) => headers.set(key, value),
};

const recordSetter: TextMapSetter<Record<string, string>> = {
  set: (record, key, value) => {
    record[key] = value;
  },
};

/** The context named by a request's `traceparent` (the edge's span as the remote parent), or the root context. */
export function contextFromRequest(headers: IncomingHttpHeaders): Context {
  return propagator.extract(ROOT_CONTEXT, headers, nodeHeadersGetter);
}

/** `traceparent` for an envd call outside Connect (/init, /files): the active span as the parent. */
export function activeTraceHeaders(): Record<string, string> {
  const record: Record<string, string> = {};
  propagator.inject(context.active(), record, recordSetter);
  return record;
}

function sandboxIdOf(message: unknown): string | undefined {
  if (typeof message !== "object" || message === null || !("sandboxId" in message)) return undefined;
  const id = (message as { sandboxId: unknown }).sandboxId;
  return typeof id === "string" && id !== "" ? id : undefined;
}

/** Passes the messages of `source` on, calling `first` with the first one. */
async function* peekFirst<T>(source: AsyncIterable<T>, first: (message: T) => void): AsyncIterable<T> {
  let seen = false;
  for await (const message of source) {
    if (!seen) {
      seen = true;
      first(message);
    }
    yield message;
  }
}

/**
 * Passes the messages of `source` on, calling `done` when it ends, fails, or its reader stops early
 * (`return()`: a caller that leaves its for-await at the process's end event). A generator's
 * `finally` would wait for the source's own return, which for a Connect stream may be much later.
 */
function onEnd<T>(
  source: AsyncIterable<T>,
  done: (err?: unknown) => void,
  isLast: (message: T) => boolean = () => false,
): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]() {
      const it = source[Symbol.asyncIterator]();
      return {
        async next() {
          try {
            const result = await it.next();
            if (result.done || isLast(result.value)) done();
            return result;
          } catch (err) {
            done(err);
            throw err;
          }
        },
        async return(value?: unknown) {
          done();
          return it.return ? it.return(value) : { done: true as const, value: undefined };
        },
        async throw(err?: unknown) {
          done(err);
          if (it.throw) return it.throw(err);
          throw err;
        },
      };
    },
  };
}

/** Whether a message is envd's process end event (process.Process/Start and Connect streams). */
function isProcessEnd(message: unknown): boolean {
  const event = (message as { event?: { event?: { case?: unknown } } } | undefined)?.event?.event;
  return event?.case === "end";
}

function endSpan(span: Span, err: unknown): Code | undefined {
  if (err === undefined) return undefined;
  const code = ConnectError.from(err).code;
  span.setStatus({ code: SpanStatusCode.ERROR, message: Code[code] });
  span.setAttribute("rpc.connect_rpc.error_code", Code[code] ?? String(code));
  return code;
}

/**
 * The server interceptor of HostAgentService: a span per RPC (child of the context the request's
 * headers named, which agent/server.ts made active), the sandbox id on it and in the OTel context for
 * the envd calls below, and one log line per RPC with its method, outcome and duration (the request
 * and trace ids come from the log context). First in the list, so it sees the final error code.
 */
export function rpcTracingInterceptor(
  tracer: Tracer,
  logger: Logger,
  onRpc?: (method: string, code: string, seconds: number) => void,
): Interceptor {
  return (next) => async (req) => {
    const method = req.method.name;
    const parent = context.active();
    const span = tracer.startSpan(
      `HostAgent/${method}`,
      {
        kind: SpanKind.SERVER,
        attributes: { "rpc.system": "connect_rpc", "rpc.service": req.service.typeName, "rpc.method": method },
      },
      parent,
    );
    let sandboxId = req.stream ? undefined : sandboxIdOf(req.message);
    if (sandboxId !== undefined) span.setAttribute(SANDBOX_ID_ATTRIBUTE, sandboxId);
    const started = performance.now();
    let finished = false;
    const openEnvdSpans = new Set<() => void>();
    const finish = (err?: unknown) => {
      if (finished) return;
      finished = true;
      for (const end of [...openEnvdSpans]) end();
      const code = endSpan(span, err);
      span.end();
      const outcome = code === undefined ? "ok" : (Code[code] ?? String(code));
      const elapsedMs = performance.now() - started;
      onRpc?.(method, outcome, elapsedMs / 1000);
      const fields = {
        method,
        code: outcome,
        durationMs: Math.round(elapsedMs * 10) / 10,
        ...(sandboxId !== undefined ? { sandboxId } : {}),
      };
      if (POLLED_METHODS.has(method)) logger.debug("rpc", fields);
      else logger.info("rpc", fields);
    };
    let ctx = trace.setSpan(parent, span).setValue(OPEN_SPANS_KEY, openEnvdSpans);
    if (sandboxId !== undefined) ctx = ctx.setValue(SANDBOX_KEY, sandboxId);
    const request = req.stream
      ? {
          ...req,
          message: peekFirst(req.message, (m) => {
            sandboxId = sandboxIdOf(m);
            if (sandboxId !== undefined) span.setAttribute(SANDBOX_ID_ATTRIBUTE, sandboxId);
          }),
        }
      : req;
    try {
      const res = await context.with(ctx, () => next(request));
      if (!res.stream) {
        finish();
        return res;
      }
      return { ...res, message: onEnd(res.message, finish) };
    } catch (err) {
      finish(err);
      throw err;
    }
  };
}

/** What envd says it spent on a call: `server-timing: envd;dur=<ms>` (trailer), bounded to something sane. */
export function envdReportedMs(value: string | null): number | undefined {
  const match = value === null ? null : /(?:^|,)\s*envd;dur=([0-9]{1,9}(?:\.[0-9]{1,3})?)\s*(?:,|$)/.exec(value);
  if (!match?.[1]) return undefined;
  const ms = Number(match[1]);
  return Number.isFinite(ms) ? ms : undefined;
}

/**
 * The client interceptor of the agent's envd clients: a `wrenn-envd` span per call, child of the
 * active (RPC) span, whose ids go to envd in `traceparent`. It spans the call as the agent saw it
 * (sent to last message received); the time envd says it spent is an attribute beside it, so a
 * lying guest changes a number, never the trace's shape.
 */
export function envdTracingInterceptor(tracer: Tracer): Interceptor {
  return (next) => async (req) => {
    const parent = context.active();
    const sandboxId = parent.getValue(SANDBOX_KEY);
    const span = tracer.startSpan(
      `envd ${req.service.typeName}/${req.method.name}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          "rpc.system": "connect_rpc",
          "rpc.service": req.service.typeName,
          "rpc.method": req.method.name,
          ...(typeof sandboxId === "string" ? { [SANDBOX_ID_ATTRIBUTE]: sandboxId } : {}),
        },
      },
      parent,
    );
    propagator.inject(trace.setSpan(parent, span), req.header, connectHeadersSetter);
    if (!span.isRecording()) return next(req);
    let ended = false;
    let trailer: Headers | undefined;
    const open = parent.getValue(OPEN_SPANS_KEY) as Set<() => void> | undefined;
    const finish = (err?: unknown) => {
      if (ended) return;
      ended = true;
      open?.delete(endWithRpc);
      endSpan(span, err);
      const reported = envdReportedMs(trailer?.get("server-timing") ?? null);
      if (reported !== undefined) span.setAttribute("wrenn.envd.reported_ms", reported);
      span.end();
    };
    const endWithRpc = () => finish();
    open?.add(endWithRpc);
    try {
      const res = await next(req);
      trailer = res.trailer;
      if (!res.stream) {
        finish();
        return res;
      }
      // A process stream ends for the agent at envd's end event: its reader stops there, and the
      // generated client leaves the rest unread (the trailer, with envd's time, then never arrives).
      return { ...res, message: onEnd(res.message, finish, isProcessEnd) };
    } catch (err) {
      finish(err);
      throw err;
    }
  };
}
