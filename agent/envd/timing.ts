import type { Interceptor } from "@connectrpc/connect";

/**
 * envd's only part in tracing: it reports how long it spent on each Connect call as a trailer,
 * `server-timing: envd;dur=<ms>` (the W3C Server-Timing syntax), which the agent puts on the envd span
 * it records (agent/tracing.ts). envd itself loads no tracing SDK and sends spans nowhere: it runs
 * in the guest, whose traffic the host does not trust, and it costs nothing at start-up. The trace id
 * of a call still reaches envd's log lines (lib/request-context.ts reads `traceparent`).
 */
export const serverTimingInterceptor: Interceptor = (next) => async (req) => {
  const started = performance.now();
  const report = (trailer: Headers) =>
    trailer.set("server-timing", `envd;dur=${(performance.now() - started).toFixed(1)}`);
  const res = await next(req);
  if (!res.stream) {
    report(res.trailer);
    return res;
  }
  const source = res.message;
  async function* timed() {
    try {
      yield* source;
    } finally {
      report(res.trailer);
    }
  }
  return { ...res, message: timed() };
};
