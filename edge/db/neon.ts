import { neonConfig } from "@neondatabase/serverless";
import { type DatabaseFactory, neonDatabaseFactory } from "./client.js";

/** Where the Workers edge finds PostgreSQL through the Neon serverless driver. */
export interface NeonSettings {
  connectionString: string;
  /**
   * A WebSocket→TCP proxy (`host:port/path`) for PostgreSQL servers that are not Neon (local
   * development, tests). Unset for Neon, whose endpoint speaks WebSocket itself.
   */
  wsProxy?: string | undefined;
}

/**
 * The Neon driver's settings are module-wide; this applies the ones a proxy needs. Through a proxy
 * the socket is plain `ws://` (the proxy sits next to the database), and `pipelineConnect` must be
 * off because vanilla PostgreSQL negotiates SCRAM, which cannot be pipelined with the startup message.
 */
export function configureNeon(wsProxy: string | undefined): void {
  if (!wsProxy) return;
  const base = wsProxy.replace(/^wss?:\/\//, "");
  neonConfig.wsProxy = (host, port) => `${base}?address=${host}:${port}`;
  neonConfig.useSecureWebSocket = false;
  neonConfig.pipelineConnect = false;
  neonConfig.pipelineTLS = false;
}

/** A per-request Neon database factory (a Pool per call, closed by the caller) for these settings. */
export function neonDatabase(settings: NeonSettings): DatabaseFactory {
  configureNeon(settings.wsProxy);
  return neonDatabaseFactory(settings.connectionString);
}
