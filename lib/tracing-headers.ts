/**
 * W3C Trace Context headers as plain text, with no OpenTelemetry import: envd (in every guest) and the
 * loggers read the trace id of a request from here, so that neither loads a tracing SDK to put the
 * trace id on their log lines.
 */

/** The W3C header naming the trace and the caller's span (`00-<trace id>-<span id>-<flags>`). */
export const TRACEPARENT_HEADER = "traceparent";

/** Version 00 of the header; later versions may append fields after the flags (the spec says to accept them). */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** A parsed `traceparent`. */
export interface TraceParent {
  traceId: string;
  /** The span of the caller: the parent of the receiver's span. */
  spanId: string;
  sampled: boolean;
}

/**
 * Parses a `traceparent` header; undefined when it is missing or malformed (an all-zero id, version
 * ff, or a version-00 header with trailing fields), as the W3C spec asks receivers to ignore those.
 */
export function parseTraceparent(value: string | string[] | null | undefined): TraceParent | undefined {
  if (typeof value !== "string" || value.length > 512) return undefined;
  const match = TRACEPARENT.exec(value.trim());
  if (!match) return undefined;
  const [, version, traceId = "", spanId = "", flags = "00", rest] = match;
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return { traceId, spanId, sampled: (Number.parseInt(flags, 16) & 1) === 1 };
}
