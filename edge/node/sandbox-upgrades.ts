import type { IncomingMessage, Server } from "node:http";
import { connect as connectTcp, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { connect as connectTls, type TLSSocket } from "node:tls";
import type { AppDeps } from "../context.js";
import { codeToStatus, type ErrorCode } from "../errors/codes.js";
import { errorBody } from "../errors/handle.js";
import { requestIdHeader } from "../middleware/init.js";
import { isRelayableStatus, sandboxBadResponse, sandboxUnavailable } from "../proxy/errors.js";
import { decideSandboxRoute, guestRequestHeaders, refusalForAgentBody } from "../proxy/sandbox-proxy.js";
import { serviceContext } from "../services/context.js";
import { randomString } from "../services/ids.js";
import { agentCertificateProblem, agentTlsOptions } from "./agent-tls.js";

/**
 * WebSocket (and any HTTP/1.1 Upgrade) for the sandbox proxy on Node. Hono's `fetch` interface cannot
 * hand over a socket, so Node's `upgrade` event gets the request, the shared routing decision picks
 * the sandbox and its agent, and the client socket is spliced onto an upgrade request to the agent's
 * `/proxy/{id}/{port}/…` route. (Workers would use WebSocketPair; not wired up.)
 */
export function attachSandboxUpgrades(server: unknown, deps: AppDeps): void {
  (server as Server).on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => socket.destroy());
    const requestId = `req_${randomString(20, "abcdefghijklmnopqrstuvwxyz0123456789")}`;
    handleUpgrade(deps, req, socket, head, requestId).catch((err: unknown) => {
      deps.logger.error("sandbox upgrade failed", { requestId, err });
      const code: ErrorCode = "INTERNAL_SERVER_ERROR";
      writeRaw(
        socket,
        codeToStatus[code],
        JSON.stringify(errorBody(code, "internal error; quote the requestId", requestId)),
      );
    });
  });
}

function writeRaw(socket: Duplex, status: number, body: string, contentType = "application/json"): void {
  if (socket.destroyed) return;
  socket.end(
    `HTTP/1.1 ${status} ${status === 502 ? "Bad Gateway" : "Error"}\r\ncontent-type: ${contentType}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

function requestHeaders(req: IncomingMessage): Headers {
  const headers = new Headers();
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    headers.append(req.rawHeaders[i] ?? "", req.rawHeaders[i + 1] ?? "");
  }
  return headers;
}

async function handleUpgrade(
  deps: AppDeps,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  requestId: string,
): Promise<void> {
  const database = deps.database();
  let decision: Awaited<ReturnType<typeof decideSandboxRoute>>;
  try {
    const ctx = serviceContext(deps, { db: database.db, requestId });
    const headers = requestHeaders(req);
    // The Host header (which routes) travels in `headers`; the URL's host is a placeholder because a
    // sandbox host like `8000-<id>.127.0.0.1:3000` is not a valid URL host.
    const request = new Request(`http://sandbox-proxy.invalid${req.url ?? "/"}`, {
      method: req.method ?? "GET",
      headers,
    });
    decision = await decideSandboxRoute(ctx, request);
  } finally {
    await database.close().catch(() => {});
  }
  if (decision.kind === "not-sandbox-traffic") {
    const message = "upgrades are only served for sandbox traffic";
    writeRaw(socket, 404, JSON.stringify({ ...errorBody("NOT_FOUND", message, requestId), code: 404, message }));
    return;
  }
  if (decision.kind === "refuse") {
    writeRaw(socket, decision.response.status, await decision.response.text());
    return;
  }
  const { destination } = decision;
  const agentUrl = new URL(destination.target.address);
  const tls = agentUrl.protocol === "https:";
  const port = Number(agentUrl.port || (tls ? 443 : 80));
  const upstream: Socket = tls
    ? connectTls({
        host: agentUrl.hostname,
        port,
        servername: agentUrl.hostname,
        ...agentTlsOptions(destination.target.tls),
      })
    : connectTcp({ host: agentUrl.hostname, port });
  const base = agentUrl.pathname.replace(/\/+$/, "");
  const lines = [
    `${req.method ?? "GET"} ${base}/proxy/${destination.sandboxId}/${destination.port}${destination.pathAndQuery} HTTP/1.1`,
    `host: ${agentUrl.host}`,
    `authorization: Bearer ${destination.target.token}`,
    `${requestIdHeader}: ${requestId}`,
    "connection: Upgrade",
    `upgrade: ${req.headers.upgrade ?? "websocket"}`,
  ];
  for (const [name, value] of Object.entries(guestRequestHeaders(requestHeaders(req), destination))) {
    if (name === "accept-encoding") continue;
    lines.push(`${name}: ${value.replace(/[\r\n]/g, " ")}`);
  }
  upstream.once(tls ? "secureConnect" : "connect", () => {
    // A pinned host's certificate is checked before the token is written (see agent-tls.ts).
    const certificateProblem = tls ? agentCertificateProblem(upstream as TLSSocket, destination.target.tls) : undefined;
    if (certificateProblem !== undefined || (!tls && destination.target.tls !== undefined)) {
      deps.logger.warn("sandbox upgrade: agent certificate refused", {
        requestId,
        reason: certificateProblem ?? "not https",
      });
      upstream.destroy();
      socket.destroy();
      return;
    }
    upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
    if (head.length > 0) upstream.write(head);
    readAnswerHead(upstream).then(
      async (answer) => {
        if (socket.destroyed) return;
        if (answer.status === undefined) {
          deps.logger.warn("sandbox upgrade: malformed answer", {
            requestId,
            sandboxId: destination.sandboxId,
            reason: answer.reason,
          });
          void writeError(socket, sandboxBadResponse(destination.sandboxId, answer.reason, requestId));
          upstream.destroy();
          return;
        }
        if (answer.status !== 101) {
          const refusal = await agentRefusalOf(upstream, answer, destination, requestId);
          if (refusal) {
            void writeError(socket, refusal);
            upstream.destroy();
            return;
          }
        }
        // 101 (the upgrade) or an ordinary answer (a guest that does not upgrade): the head parsed,
        // so it goes to the client as it came, then both ways are spliced.
        socket.write(answer.bytes);
        upstream.pipe(socket);
        socket.pipe(upstream);
      },
      () => {
        // "error" below answers.
      },
    );
  });
  upstream.once("error", () => {
    if (!socket.destroyed && socket.writable) {
      void writeError(socket, sandboxUnavailable(destination.sandboxId, "its host agent is not answering", requestId));
    }
    upstream.destroy();
  });
  socket.once("close", () => upstream.destroy());
  upstream.once("close", () => {
    if (!answered.has(socket)) socket.destroy();
  });
}

/** Sockets whose error answer is being written (closing them early would cut it off). */
const answered = new WeakSet<Duplex>();

/** Writes one of the proxy's error answers and closes the client's socket. */
async function writeError(socket: Duplex, response: Response): Promise<void> {
  answered.add(socket);
  writeRaw(socket, response.status, await response.text());
}

/** The most an agent's own refusal body takes (a small JSON error). */
const agentRefusalMaxBytes = 4096;

/**
 * When the answer is the agent's own refusal (404, 409 or 502 with a small JSON body: port not open,
 * sandbox gone, the guest's answer malformed), the edge's answer for it, as on the HTTP path.
 */
async function agentRefusalOf(
  upstream: Socket,
  answer: { status: number; bytes: Buffer },
  destination: { sandboxId: string; port: number },
  requestId: string,
): Promise<Response | undefined> {
  if (answer.status !== 404 && answer.status !== 409 && answer.status !== 502) return undefined;
  const end = answer.bytes.indexOf("\r\n\r\n");
  const head = answer.bytes.subarray(0, end).toString("latin1").toLowerCase();
  if (!/\r\ncontent-type: *application\/json/.test(head)) return undefined;
  const length = Number(/\r\ncontent-length: *([0-9]+)/.exec(head)?.[1] ?? Number.NaN);
  if (!(length > 0 && length < agentRefusalMaxBytes)) return undefined;
  let body = answer.bytes.subarray(end + 4);
  while (body.length < length) {
    const more = await nextChunk(upstream);
    if (more === undefined) return undefined;
    body = Buffer.concat([body, more]);
  }
  return refusalForAgentBody(body.subarray(0, length).toString("utf8"), destination, requestId);
}

/** The next chunk a paused socket reads, or undefined at its end. */
function nextChunk(upstream: Socket): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const done = (chunk: Buffer | undefined) => {
      upstream.off("data", onData);
      upstream.off("end", onEnd);
      upstream.off("close", onEnd);
      upstream.pause();
      resolve(chunk);
    };
    const onData = (chunk: Buffer) => done(chunk);
    const onEnd = () => done(undefined);
    upstream.on("data", onData);
    upstream.once("end", onEnd);
    upstream.once("close", onEnd);
    upstream.resume();
  });
}

/** The most a response head from the agent may take before it is refused. */
const maxAnswerHeadBytes = 64 * 1024;

/** A parsed answer head: its status and bytes (with any body bytes read past it), or why it is refused. */
type AnswerHead = { status: number; bytes: Buffer } | { status: undefined; reason: string };

/**
 * Reads the agent's answer to the upgrade request up to the end of its head and checks its status
 * line: the agent relays the guest's, so a guest decides it. A status outside 101 and 200–599, a
 * status line that is not HTTP/1.x, or a head that never ends within `maxAnswerHeadBytes` is refused;
 * anything else is handed on byte for byte. Rejects when the connection fails before a head.
 */
export function readAnswerHead(upstream: Socket): Promise<AnswerHead> {
  return new Promise((resolve, reject) => {
    let buffered: Buffer = Buffer.alloc(0);
    const finish = () => {
      upstream.off("data", onData);
      upstream.off("end", onEnd);
      upstream.off("error", onError);
    };
    const onData = (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf("\r\n\r\n");
      if (end === -1) {
        if (buffered.length > maxAnswerHeadBytes) {
          finish();
          resolve({ status: undefined, reason: `a response head over ${maxAnswerHeadBytes} bytes` });
        }
        return;
      }
      finish();
      upstream.pause();
      const statusLine = buffered.subarray(0, buffered.indexOf("\r\n")).toString("latin1");
      const match = /^HTTP\/1\.[01] ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?$/.exec(statusLine);
      const status = match ? Number(match[1]) : undefined;
      if (status === undefined) resolve({ status: undefined, reason: "not an HTTP/1.1 status line" });
      else if (status !== 101 && !isRelayableStatus(status)) resolve({ status: undefined, reason: `status ${status}` });
      else resolve({ status, bytes: buffered });
    };
    const onEnd = () => {
      finish();
      resolve({ status: undefined, reason: buffered.length > 0 ? "a truncated response head" : "no answer" });
    };
    const onError = (err: Error) => {
      finish();
      reject(err);
    };
    upstream.on("data", onData);
    upstream.once("end", onEnd);
    upstream.once("error", onError);
  });
}
