import type http from "node:http";
import type http2 from "node:http2";
import { createDualListener, type DualListener, type DualListenerOptions } from "../../../lib/dual-listener.js";

// envd's one-port HTTP/1.1 + h2c listener is the shared one (lib/dual-listener.ts, also the agent's).
// These names stay for the integration test that drives it as envd uses it.

export type DualProtocolListener = DualListener;

/** lib/dual-listener.ts with envd's bounds (30 s for a connection's first bytes, 1024 connections). */
export function createDualProtocolListener(
  h1: http.Server,
  h2: () => Promise<http2.Http2Server>,
  limits: DualListenerOptions = { firstBytesTimeoutMs: 30_000, maxConnections: 1024 },
): DualListener {
  return createDualListener(h1, h2, limits);
}
