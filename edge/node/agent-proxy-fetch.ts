import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { connect, type NetConnectOpts, type Socket } from "node:net";
import { BadUpstreamResponse, isRelayableStatus, relayableStatusText } from "../proxy/errors.js";
import { pipeTaken, takeNodeSource, webStreamOf } from "./streams.js";

/**
 * Reads from agents land here, up to 1 MiB at a time (Node reads a socket 64 KiB at a time otherwise),
 * so a large download costs the edge a sixteenth of the per-read work (parser callback, stream push,
 * write to the client). One buffer serves every connection: each read is consumed or copied before
 * the next (see connectWithLargeReads). The agent reads its guests the same way (agent/proxy-relay.ts).
 */
const readBuffer = Buffer.allocUnsafe(1024 * 1024);

/** A plain-HTTP connection to an agent whose reads are up to 1 MiB; the HTTP client parses them as usual. */
function connectWithLargeReads(options: NetConnectOpts): Socket {
  const socket: Socket = connect({
    ...options,
    onread: {
      buffer: readBuffer,
      // A flowing socket with nothing buffered hands the chunk to its "data" listener (the HTTP
      // client's parser, which copies the body pieces and header text it keeps) before push()
      // returns, so the buffer may be read into again; a chunk that has to wait in the socket's
      // buffer is copied. push() returning false stops reading: ordinary backpressure.
      callback: (bytes: number, buffer: Uint8Array) => {
        const view = Buffer.from(buffer.buffer, buffer.byteOffset, bytes);
        return socket.push(socket.readableFlowing === true && socket.readableLength === 0 ? view : Buffer.from(view));
      },
    },
  } as NetConnectOpts);
  return socket;
}

/** Statuses whose responses have no body (the Response constructor refuses one). */
const nullBodyStatuses = new Set([101, 204, 205, 304]);

function requestHeaders(init: HeadersInit | undefined): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  new Headers(init).forEach((value, name) => {
    out[name] = value;
  });
  return out;
}

function responseHeaders(res: IncomingMessage): Headers {
  const headers = new Headers();
  for (let i = 0; i < res.rawHeaders.length; i += 2) {
    headers.append(res.rawHeaders[i] ?? "", res.rawHeaders[i + 1] ?? "");
  }
  return headers;
}

/**
 * The web `Response` of an answer, or BadUpstreamResponse when the answer cannot be one: the agent
 * relays the guest's status line and headers, so a guest decides them, and `new Response` throws on
 * a status outside 200–599 or a header `Headers` refuses. (Thrown inside the socket's "response"
 * listener, that error would escape every handler and end the process.)
 */
function webResponse(res: IncomingMessage): Response {
  const status = res.statusCode ?? 0;
  if (!isRelayableStatus(status)) throw new BadUpstreamResponse(`status ${status}`);
  let headers: Headers;
  try {
    headers = responseHeaders(res);
  } catch (err) {
    throw new BadUpstreamResponse("headers that cannot be relayed", { cause: err });
  }
  const body = nullBodyStatuses.has(status) ? null : webStreamOf(res);
  if (body === null) res.resume();
  return new Response(body, { status, statusText: relayableStatusText(res.statusMessage), headers });
}

/** Node's HTTP parser failures (`HPE_*`): the answer was not HTTP at all. */
function isParseError(err: unknown): err is Error & { code: string } {
  if (!(err instanceof Error)) return false;
  const code: unknown = (err as Error & { code?: unknown }).code;
  return typeof code === "string" && code.startsWith("HPE_");
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new DOMException("the request was aborted", "AbortError");
}

/**
 * A `fetch` for the agent's `/proxy` route on the Node edge, over node:http with kept-alive
 * connections. Node's built-in fetch (undici) and its web-stream plumbing cost more CPU than the bytes
 * on large transfers; this one writes the request body's chunks straight to the socket and hands the
 * response's socket reads on without copying. It follows no redirects (the agent never sends one).
 * Bodies are streams, bytes or strings; nothing else is needed by the proxy callers.
 */
export function createAgentProxyFetch(options: { httpsAgent?: HttpsAgent } = {}): typeof fetch {
  const agents = {
    "http:": Object.assign(new HttpAgent({ keepAlive: true }), { createConnection: connectWithLargeReads }),
    // A host registered with a TLS pin or CA gets an agent that verifies it (edge/node/agent-tls.ts).
    "https:": options.httpsAgent ?? new HttpsAgent({ keepAlive: true }),
  };
  return (input, init = {}) =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(input instanceof Request ? input.url : input);
      const signal = init.signal ?? undefined;
      if (signal?.aborted) {
        reject(abortReason(signal));
        return;
      }
      const secure = url.protocol === "https:";
      const req = (secure ? httpsRequest : httpRequest)(url, {
        method: init.method ?? "GET",
        headers: requestHeaders(init.headers),
        agent: secure ? agents["https:"] : agents["http:"],
      });
      let answered = false;
      const onAbort = () => {
        if (signal) req.destroy(abortReason(signal));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      req.once("error", (err) => {
        signal?.removeEventListener("abort", onAbort);
        if (answered) return;
        reject(isParseError(err) ? new BadUpstreamResponse(`not HTTP (${err.code})`, { cause: err }) : err);
      });
      // A socket that is not ours to keep after a refused answer: errors after "response" are the
      // body's and reach its stream; a second "error" listener keeps a late one from being unhandled.
      req.on("error", () => {});
      req.once("response", (res) => {
        answered = true;
        res.once("close", () => signal?.removeEventListener("abort", onAbort));
        try {
          resolve(webResponse(res));
        } catch (err) {
          res.destroy();
          reject(err instanceof BadUpstreamResponse ? err : new BadUpstreamResponse(String(err), { cause: err }));
        }
      });
      const body = init.body;
      if (body === undefined || body === null) {
        req.end();
      } else if (typeof body === "string" || body instanceof Uint8Array) {
        req.end(body);
      } else if (body instanceof ReadableStream) {
        void pump(body as ReadableStream<Uint8Array>, req);
      } else {
        req.destroy(new TypeError("agent proxy fetch: unsupported request body type"));
      }
    });
}

/**
 * Writes a web stream into the request, waiting for "drain" when the socket is behind. A failing
 * source (say, the upload went over its limit) destroys the request, so the agent and envd see an
 * aborted body and keep nothing of it.
 */
async function pump(source: ReadableStream<Uint8Array>, req: ReturnType<typeof httpRequest>): Promise<void> {
  // A body straight from the client's socket (a proxied upload) is piped socket to socket, without a
  // web-stream read per chunk.
  const taken = await takeNodeSource(source);
  if (taken) {
    await pipeTaken(taken, req).catch((err: unknown) => {
      req.destroy(err instanceof Error ? err : new Error(String(err)));
    });
    return;
  }
  const reader = source.getReader();
  const stop = () => {
    reader.cancel().catch(() => {});
  };
  req.once("close", stop);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (req.destroyed) return;
      // Writes made in the same turn go out together: a multipart file part arrives as each network
      // chunk plus the few bytes held back to look for a boundary, and without corking every such
      // sliver became its own chunk frame, syscall and packet.
      if (req.writableCorked === 0) {
        req.cork();
        process.nextTick(() => req.uncork());
      }
      if (!req.write(value)) {
        await new Promise<void>((resolve) => {
          const go = () => {
            req.off("drain", go);
            req.off("close", go);
            resolve();
          };
          req.on("drain", go);
          req.on("close", go);
        });
      }
    }
    req.end();
  } catch (err) {
    req.destroy(err instanceof Error ? err : new Error(String(err)));
  } finally {
    req.off("close", stop);
  }
}
