import { ServerResponse } from "node:http";
import type { Http2Bindings, HttpBindings } from "@hono/node-server";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import type { Logger } from "../logger.js";
import { isRelayed } from "../proxy/relayed.js";
import { splitRequestUrl } from "../proxy/routing.js";
import { pipeTaken, takeNodeSource } from "./streams.js";

type FetchHandler = (request: Request, env: HttpBindings | Http2Bindings) => Response | Promise<Response>;

/**
 * A relayed body that, when its source fails, logs once and destroys the client's connection
 * instead of failing the stream. @hono/node-server prints a failed body's error with
 * `console.error` (the raw `Error: aborted` outside the JSON log) before cutting the connection;
 * cutting it here first makes the server see a cancelled stream, which it leaves alone.
 */
function guardedBody(
  source: ReadableStream<Uint8Array>,
  outgoing: { destroy(): unknown },
  logger: Logger,
  requestUrl: string,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let next: ReadableStreamReadResult<Uint8Array>;
        try {
          next = await reader.read();
        } catch (err) {
          logger.warn("relayed body failed; cutting the client connection", {
            url: requestUrl,
            reason: err instanceof Error ? err.message : String(err),
          });
          outgoing.destroy();
          return;
        }
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      },
      cancel(reason) {
        return reader.cancel(reason).catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
}

/** A response's headers for `writeHead` (Set-Cookie kept as separate values). */
function outgoingHeaders(headers: Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  headers.forEach((value, name) => {
    if (name !== "set-cookie") out[name] = value;
  });
  const cookies = headers.getSetCookie();
  if (cookies.length > 0) out["set-cookie"] = cookies;
  return out;
}

/**
 * Wraps the app's fetch for @hono/node-server: responses marked as relayed from a sandbox get a body
 * whose mid-stream failure ends the client connection quietly (see `guardedBody`). Other responses
 * pass untouched, keeping the server's fast path for small bodies.
 */
export function guardRelayedBodies(handler: FetchHandler, logger: Logger): FetchHandler {
  return async (request, env) => {
    const response = await handler(request, env);
    const outgoing = env.outgoing;
    if (!outgoing || !isRelayed(response) || response.body === null) return response;
    // Not `new URL`: a sandbox Host such as `8000-<id>.127.0.0.1:3000` makes the URL unparsable.
    const { pathname } = splitRequestUrl(request.url);
    if (outgoing instanceof ServerResponse && !outgoing.headersSent) {
      // A body relayed from the agent's socket (a download, a proxied answer) goes from that socket
      // to the client's with Node's own stream plumbing: through web streams it cost the edge two
      // promise-based layers per socket read, most of its CPU on a large download.
      const taken = await takeNodeSource(response.body);
      if (taken) {
        outgoing.writeHead(response.status, response.statusText || undefined, outgoingHeaders(response.headers));
        outgoing.flushHeaders();
        pipeTaken(taken, outgoing).catch((err: unknown) => {
          if (outgoing.destroyed) return;
          logger.warn("relayed body failed; cutting the client connection", {
            url: pathname,
            reason: err instanceof Error ? err.message : String(err),
          });
          outgoing.destroy();
        });
        return RESPONSE_ALREADY_SENT;
      }
    }
    return new Response(guardedBody(response.body, outgoing, logger, pathname), {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  };
}
