import { type Client, Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { readAllBytes, type UniversalClientFn, universalClientResponseFromFetch } from "@connectrpc/connect/protocol";
import { createTransport } from "@connectrpc/connect/protocol-connect";
import { HostAgentService } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import type { ErrorCode } from "../errors/codes.js";
import { ServiceError } from "../services/errors.js";

/** A generated, typed client of one host agent. */
export type AgentClient = Client<typeof HostAgentService>;

/**
 * How the edge checks an agent's TLS certificate beyond the system's CAs: an exact certificate (its
 * SHA-256 fingerprint, lowercase hex), a private CA, or both. Only the Node edge can apply it.
 */
export interface AgentTlsPolicy {
  certSha256?: string;
  caPem?: string;
}

/** What the edge needs to reach a host agent. `token` is the decrypted bearer token. */
export interface HostTarget {
  id: string;
  /** Base URL of the agent, e.g. `http://10.0.0.5:9000`. */
  address: string;
  token: string;
  /** Set when the host was registered with a pinned certificate or CA. */
  tls?: AgentTlsPolicy;
}

/**
 * Makes a `fetch` that verifies an agent's certificate against a policy. The Node edge provides one
 * (edge/node/agent-tls.ts); Workers' `fetch` has no way to see or pin a peer certificate, so there a
 * host with a policy is refused rather than reached unverified.
 */
export type PinnedFetchFactory = (policy: AgentTlsPolicy) => typeof fetch;

/** Per-call options of `AgentConnector.proxy`. */
export interface ProxyRequestInit {
  method: string;
  headers?: Record<string, string>;
  body?: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | string | null;
  signal?: AbortSignal;
  requestId: string;
}

/**
 * Reaches host agents: a Connect client for RPCs, and the agent's `/proxy/{id}/{port}/…` route for
 * streamed sandbox traffic (large file transfers). Tests swap in an in-memory implementation.
 */
export interface AgentConnector {
  /** `headers` ride on every call of the client (the edge's `traceparent`, edge/middleware/observe.ts). */
  client(host: HostTarget, requestId: string, headers?: Record<string, string>): AgentClient;
  proxy(
    host: HostTarget,
    sandboxId: string,
    port: number,
    pathAndQuery: string,
    init: ProxyRequestInit,
  ): Promise<Response>;
}

/** Deadlines of agent calls, in milliseconds. Creating or resuming a VM under TCG can take a while. */
export const agentTimeouts = {
  default: 30_000,
  lifecycle: 180_000,
  hostInfo: 10_000,
} as const;

/** Header that carries the edge's request id to the agent, so logs on both sides correlate. */
export const requestIdHeader = "x-request-id";

/** Adds `Authorization: Bearer <host token>` to every call. */
export function bearerInterceptor(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/** Forwards the edge's request id (and any other per-request headers, such as `traceparent`) to the agent. */
export function requestIdInterceptor(requestId: string, headers?: Record<string, string>): Interceptor {
  return (next) => (req) => {
    req.header.set(requestIdHeader, requestId);
    if (headers) for (const [name, value] of Object.entries(headers)) req.header.set(name, value);
    return next(req);
  };
}

/**
 * Size limits of one Connect message between edge and agent. The agent's answers are under its own
 * bounds (a file or each exec stream at 16 MiB, so a unary exec answer holds at most 32 MiB plus the
 * envelope; the agent's server writes at most 40 MiB), and everything in them — exec output, file
 * bytes, listings, status text — is shaped by a guest. Without a limit Connect accepts ~4 GiB, so
 * a hostile or broken agent (or a guest it relays) could make the edge buffer gigabytes.
 */
export const agentMessageLimits = {
  /** The agent server's `writeMaxBytes` (agent/server.ts): anything larger is not from a sound agent. */
  readMaxBytes: 40 * 2 ** 20,
  /** The agent server's `readMaxBytes`: larger would be refused there anyway, so fail before sending. */
  writeMaxBytes: 17 * 2 ** 20,
} as const;

/**
 * A Connect HTTP client over `fetch`. Every edge → agent call is unary or server-streaming, so the
 * request is one message: it is collected (bounded by `writeMaxBytes`) and sent as a fixed body,
 * which Node's fetch takes without `duplex` and workerd without a streamed upload. `redirect:
 * "manual"` because an agent never redirects (and workerd rejects `redirect: "error"`).
 */
function agentHttpClient(fetchFn: typeof fetch): UniversalClientFn {
  return async (req) => {
    const body =
      req.body === undefined ? undefined : await readAllBytes(req.body, agentMessageLimits.writeMaxBytes + 5);
    // fetch offers gzip by itself (Accept-Encoding), and a Connect server then compresses a unary
    // answer, which this transport (no compression: bounded reads) refuses. Ask for none.
    const headers = new Headers(req.header);
    headers.set("accept-encoding", "identity");
    const res = await fetchFn(req.url, {
      method: req.method,
      headers,
      signal: req.signal,
      redirect: "manual",
      ...(body !== undefined ? { body: body as Uint8Array<ArrayBuffer> } : {}),
    });
    return universalClientResponseFromFetch(res);
  };
}

/**
 * Builds the Connect transport to one agent, with bearer token, request id and bounded messages.
 * This is @connectrpc/connect's own Connect-protocol transport (connect-web's has no `readMaxBytes`):
 * a unary answer is read up to the limit (checked against Content-Length first), a stream message
 * by its envelope's length, so an oversized answer fails before it is buffered. No compression is
 * offered, so nothing is inflated past the limit either.
 */
export function createAgentTransport(
  host: HostTarget,
  requestId: string,
  baseFetch?: typeof fetch,
  headers?: Record<string, string>,
): Transport {
  const fetchFn = baseFetch ?? ((input, init) => globalThis.fetch(input, init));
  return createTransport({
    httpClient: agentHttpClient(fetchFn),
    baseUrl: host.address,
    useBinaryFormat: true,
    interceptors: [bearerInterceptor(host.token), requestIdInterceptor(requestId, headers)],
    acceptCompression: [],
    sendCompression: null,
    compressMinBytes: 0,
    readMaxBytes: agentMessageLimits.readMaxBytes,
    writeMaxBytes: agentMessageLimits.writeMaxBytes,
    defaultTimeoutMs: agentTimeouts.default,
  });
}

/** The connector used in production: connect-web over `fetch`, and `fetch` to the agent's proxy route. */
export function createAgentConnector(
  options: {
    fetch?: typeof fetch;
    /** `fetch` for the `/proxy` route only (the Node edge passes a faster one for large transfers). */
    proxyFetch?: typeof fetch;
    /** For hosts with a TLS policy: both RPCs and proxied traffic go through the verifying `fetch`. */
    pinnedFetch?: PinnedFetchFactory;
  } = {},
): AgentConnector {
  const baseFetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const plainProxyFetch = options.proxyFetch ?? baseFetch;
  /** The fetch that may carry this host's token: a verifying one when the host has a TLS policy. */
  const fetchFor = (host: HostTarget, plain: typeof fetch): typeof fetch => {
    if (host.tls === undefined) return plain;
    if (options.pinnedFetch === undefined) {
      throw new ServiceError(
        "AGENT_UNAVAILABLE",
        `host ${host.id} is registered with a pinned TLS certificate or CA, which this edge runtime cannot verify ` +
          "(Cloudflare Workers' fetch exposes no peer certificate); reach it from a Node edge, or register it without a pin behind a publicly trusted certificate",
      );
    }
    return options.pinnedFetch(host.tls);
  };
  return {
    client: (host, requestId, headers) =>
      createClient(HostAgentService, createAgentTransport(host, requestId, fetchFor(host, baseFetch), headers)),
    proxy: async (host, sandboxId, port, pathAndQuery, init) => {
      const proxyFetch = fetchFor(host, plainProxyFetch);
      const url = `${host.address.replace(/\/+$/, "")}/proxy/${sandboxId}/${port}${pathAndQuery}`;
      const headers = { ...init.headers, authorization: `Bearer ${host.token}`, [requestIdHeader]: init.requestId };
      // `duplex: "half"` is required by Node's fetch for a streamed request body (Workers ignores it).
      const requestInit: RequestInit & { duplex?: "half" } = {
        method: init.method,
        headers,
        body: (init.body ?? null) as BodyInit | null,
        redirect: "manual",
        signal: init.signal ?? null,
      };
      if (init.body instanceof ReadableStream) requestInit.duplex = "half";
      return proxyFetch(url, requestInit);
    },
  };
}

/**
 * Connect code of a failed agent call → API error code. One table, tested case by case. Codes the
 * table leaves out are agent bugs and become `AGENT_ERROR`.
 */
export const AGENT_ERROR_MAP: Partial<Record<Code, ErrorCode>> = {
  [Code.InvalidArgument]: "BAD_REQUEST",
  [Code.OutOfRange]: "BAD_REQUEST",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "CONFLICT",
  [Code.FailedPrecondition]: "CONFLICT",
  [Code.Aborted]: "CONFLICT",
  [Code.ResourceExhausted]: "NO_CAPACITY",
  [Code.Unimplemented]: "NOT_IMPLEMENTED",
  [Code.Unavailable]: "AGENT_UNAVAILABLE",
  [Code.DeadlineExceeded]: "AGENT_UNAVAILABLE",
  [Code.Canceled]: "AGENT_UNAVAILABLE",
  [Code.Unauthenticated]: "AGENT_ERROR",
  [Code.PermissionDenied]: "AGENT_ERROR",
  [Code.Internal]: "AGENT_ERROR",
  [Code.Unknown]: "AGENT_ERROR",
  [Code.DataLoss]: "AGENT_ERROR",
};

/** Codes whose agent message tells the caller what to fix, so it is passed on verbatim. */
const callerFacingCodes = new Set<ErrorCode>(["BAD_REQUEST", "NOT_FOUND", "CONFLICT", "NO_CAPACITY"]);

const genericMessages: Partial<Record<ErrorCode, string>> = {
  AGENT_UNAVAILABLE: "the host agent is unavailable; try again",
  AGENT_ERROR: "the host agent failed; quote the requestId when reporting it",
  NOT_IMPLEMENTED: "the host agent does not support this operation",
};

/**
 * The Connect code of a failed call. `fetch` rejects with a TypeError when it cannot connect, which
 * connect-web reports as Unknown; that is a transport failure, so it counts as Unavailable.
 */
export function connectCodeOf(err: unknown): Code {
  const connectError = ConnectError.from(err);
  if (connectError.code === Code.Unknown && (err instanceof TypeError || connectError.cause instanceof TypeError)) {
    return Code.Unavailable;
  }
  return connectError.code;
}

/** Turns a failure of an agent call into a ServiceError using `AGENT_ERROR_MAP`. */
export function agentErrorToServiceError(err: unknown, what: string): ServiceError {
  if (err instanceof ServiceError) return err;
  // A refused agent certificate (Node edge, pinned host) says what was presented and what was pinned:
  // the operator needs that, and it holds nothing secret.
  const certificate = certificateRefusal(err);
  if (certificate !== undefined)
    return new ServiceError("AGENT_UNAVAILABLE", `${what}: ${certificate}`, { cause: err });
  const connectError = ConnectError.from(err);
  if (isMessageSizeRefusal(connectError)) {
    return new ServiceError(
      "AGENT_ERROR",
      `${what}: the host agent's answer is larger than the edge accepts (${agentMessageLimits.readMaxBytes / 2 ** 20} MiB per message)`,
      { cause: err },
    );
  }
  const code = AGENT_ERROR_MAP[connectCodeOf(err)] ?? "AGENT_ERROR";
  const message = callerFacingCodes.has(code)
    ? `${what}: ${connectError.rawMessage}`
    : `${what}: ${genericMessages[code] ?? "the host agent failed"}`;
  return new ServiceError(code, message, { cause: err });
}

/** Whether an agent error is a definite answer (the agent saw the call) rather than a transport failure. */
export function isAgentAnswer(err: unknown): boolean {
  const code = connectCodeOf(err);
  return !(code === Code.Unavailable || code === Code.DeadlineExceeded || code === Code.Canceled);
}

/**
 * Whether a ResourceExhausted failure is Connect's own message-size limit (this transport's
 * `readMaxBytes`/`writeMaxBytes`, or the agent server's `readMaxBytes`) rather than the agent saying
 * it has no room. The agent's own refusals always carry an `error-reason` (agent/error-map.ts);
 * a size limit never does. Telling them apart keeps an oversized answer from reading as NO_CAPACITY.
 */
function isMessageSizeRefusal(err: ConnectError): boolean {
  return (
    err.code === Code.ResourceExhausted &&
    err.metadata.get("error-reason") === null &&
    /\b(read|write)MaxBytes\b/.test(err.rawMessage)
  );
}

/** The message of an AgentCertificateError (edge/node/agent-tls.ts) somewhere in `err`'s causes. */
function certificateRefusal(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    if (current.name === "AgentCertificateError") return current.message;
    current = current.cause;
  }
  return undefined;
}
