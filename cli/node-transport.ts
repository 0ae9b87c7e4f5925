import { Agent, request as httpRequest, type IncomingMessage } from "node:http";
import type { Transport, TransportAnswer, TransportRequest } from "../sdk/config.js";

/**
 * The CLI's transport for the SDK's calls that read their answer whole: `node:http` (and, only for
 * an https API, `node:https`, loaded then). On Node 20 the global `fetch` loads undici and its
 * WebAssembly parser before the first request, about a fifth of a short command's start-up
 * (`npm run bench -- cli`); this costs what a bare `node:http` GET costs. Streams and file
 * transfers keep using `fetch`.
 */

// Keep-alive for commands that make several calls (pages, several ids). Node unrefs a pooled idle
// socket, so one left open does not hold the process.
const httpAgent = new Agent({ keepAlive: true });
let httpsAgent: Agent | undefined;

async function agentFor(url: URL): Promise<{ agent: Agent; send: typeof httpRequest }> {
  if (url.protocol === "http:") return { agent: httpAgent, send: httpRequest };
  if (url.protocol !== "https:") throw new TypeError(`unsupported protocol ${url.protocol} in ${url.href}`);
  const https = await import("node:https");
  httpsAgent ??= new https.Agent({ keepAlive: true });
  return { agent: httpsAgent, send: https.request as typeof httpRequest };
}

/** An answer whose body has been read. */
function answer(res: IncomingMessage, body: string): TransportAnswer {
  return {
    status: res.statusCode ?? 0,
    statusText: res.statusMessage ?? "",
    headers: {
      get(name: string) {
        const value = res.headers[name.toLowerCase()];
        return value === undefined ? null : Array.isArray(value) ? value.join(", ") : value;
      },
    },
    text: async () => body,
  };
}

/** Sends one request with `node:http`/`node:https`; rejects with the signal's reason when it is aborted. */
export const nodeTransport: Transport = async (req: TransportRequest) => {
  const { agent, send } = await agentFor(req.url);
  const { signal } = req;
  signal?.throwIfAborted();
  return await new Promise<TransportAnswer>((resolve, reject) => {
    const headers: Record<string, string> = { ...req.headers };
    if (req.body !== undefined) headers["content-length"] = String(Buffer.byteLength(req.body));
    const call = send(req.url, { method: req.method, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => {
        signal?.removeEventListener("abort", onAbort);
        resolve(answer(res, Buffer.concat(chunks).toString("utf8")));
      });
      res.on("error", fail);
      // The connection closed before the body ended.
      res.on("aborted", () => fail(new Error(`the connection to ${req.url.host} closed mid-answer`)));
    });
    function fail(err: unknown) {
      signal?.removeEventListener("abort", onAbort);
      reject(err);
    }
    function onAbort() {
      const reason: unknown = signal?.reason;
      call.destroy(reason instanceof Error ? reason : new Error(String(reason)));
      fail(reason);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    call.on("error", fail);
    call.end(req.body);
  });
};
