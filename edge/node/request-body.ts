import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import type { Http2Bindings, HttpBindings } from "@hono/node-server";
import { webStreamOf } from "./streams.js";

/** Bodies at least this large (or of unknown length) take the streamed path. */
const largeBodyBytes = 1024 * 1024;

type FetchHandler = (request: Request, env: HttpBindings | Http2Bindings) => Response | Promise<Response>;

function isLargeBody(incoming: IncomingMessage | Http2ServerRequest): boolean {
  const method = incoming.method ?? "GET";
  if (method === "GET" || method === "HEAD") return false;
  const length = incoming.headers["content-length"];
  return length === undefined || Number(length) >= largeBodyBytes;
}

/**
 * Wraps the app's fetch for @hono/node-server so that large request bodies (uploads, proxied
 * sandbox traffic) reach the app as a web stream over the IncomingMessage's own Buffers. The server's
 * default (`Readable.toWeb`) copies every chunk, the largest single cost of an upload through the
 * edge. Small bodies and bodiless requests keep the server's own lazily built Request.
 */
export function streamLargeBodies(handler: FetchHandler): FetchHandler {
  return (request, env) => {
    const incoming = env.incoming;
    if (!incoming || !isLargeBody(incoming)) return handler(request, env);
    const streamed = new Request(request.url, {
      method: request.method,
      headers: request.headers,
      body: webStreamOf(incoming),
      signal: request.signal,
      duplex: "half",
    } as RequestInit & { duplex: "half" });
    return handler(streamed, env);
  };
}
