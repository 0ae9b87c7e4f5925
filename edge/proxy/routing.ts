/**
 * How a request to the edge is recognised as sandbox traffic (E2B's client-proxy rules): by the
 * `E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers the E2B SDKs send on every envd call, by a Host of the
 * form `<port>-<sandboxId>.<domain>`, or, for the signed `/files` URLs the SDK hands out without
 * any routing information, by the URL's signature. Pure functions, so they run on Workers and Node.
 */

/** Header naming the sandbox a request is for. */
export const sandboxIdHeader = "e2b-sandbox-id";
/** Header naming the guest port a request is for. */
export const sandboxPortHeader = "e2b-sandbox-port";

/** envd's port inside every guest. */
export const envdPort = 49983;

/** Traffic for one port of one sandbox. */
export interface SandboxRoute {
  kind: "sandbox";
  sandboxId: string;
  port: number;
  /**
   * How it was routed: by the E2B headers (on any host, the API's own origin included) or by a
   * `<port>-<id>.<domain>` Host (the sandbox port's own origin).
   */
  via: "headers" | "host";
}

/** A signed envd `/files` URL with no routing information; the signature names the sandbox. */
export interface SignedFilesRoute {
  kind: "signed-files";
  operation: "read" | "write";
  path: string;
  username: string;
  signature: string;
  /** `signature_expiration` as sent (unix seconds); part of the signed text, verbatim. */
  expiration?: string;
}

/** A request that claims to be sandbox traffic but names no valid sandbox or port. */
export interface BadRoute {
  kind: "bad";
  message: string;
}

/** What a request to the edge is: sandbox traffic of some form, or (undefined) an API call. */
export type TrafficRoute = SandboxRoute | SignedFilesRoute | BadRoute;

const sandboxHost = /^([0-9]{1,5})-([a-z0-9]+)\./;

function parsePort(text: string): number | undefined {
  if (!/^[0-9]{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65_535 ? port : undefined;
}

/**
 * Path and query of a request URL, without parsing its host: a sandbox Host such as
 * `8000-<id>.127.0.0.1:3000` makes the URL unparsable by WHATWG rules (a host ending in a number
 * must be an IPv4 address), yet it is a valid Host header for us.
 */
export function splitRequestUrl(url: string): { pathname: string; search: string } {
  const scheme = url.indexOf("://");
  const slash = scheme === -1 ? url.indexOf("/") : url.indexOf("/", scheme + 3);
  const pathAndQuery = slash === -1 ? "/" : url.slice(slash);
  const hash = pathAndQuery.indexOf("#");
  const withoutHash = hash === -1 ? pathAndQuery : pathAndQuery.slice(0, hash);
  const question = withoutHash.indexOf("?");
  return question === -1
    ? { pathname: withoutHash, search: "" }
    : { pathname: withoutHash.slice(0, question), search: withoutHash.slice(question) };
}

/**
 * A request path as `fetch` will send it, dot segments (`..`, `%2e%2e`, backslashes) resolved, so the
 * internal-route check sees the path the guest gets and nothing climbs out of the agent's
 * `/proxy/{id}/{port}` prefix onto the agent's own routes. Undefined when it is not a usable path.
 */
export function normalizedPath(pathname: string, search: string): { pathname: string; search: string } | undefined {
  if (!pathname.startsWith("/") && !pathname.startsWith("\\")) return undefined;
  try {
    const url = new URL(`http://sandbox.invalid${pathname}${search}`);
    return { pathname: url.pathname, search: url.search };
  } catch {
    return undefined;
  }
}

/** The host name of a Host header, lower-cased and without its port. */
export function hostName(host: string): string {
  const trimmed = host.trim().toLowerCase();
  if (trimmed.startsWith("[")) return trimmed.slice(0, trimmed.indexOf("]") + 1);
  const colon = trimmed.lastIndexOf(":");
  return colon === -1 ? trimmed : trimmed.slice(0, colon);
}

/**
 * Classifies a request. Routing headers win over everything, so `E2B_SANDBOX_URL` may point at any
 * host the edge answers on (E2B honours them only on localhost and IP hosts; our API and proxy share
 * a server, so the host cannot tell them apart). Without headers a `<port>-<id>.<domain>` Host routes,
 * and a `GET`/`POST /files?…&signature=…` is matched by its signature.
 */
export function classifyTraffic(req: { method: string; url: string; headers: Headers }): TrafficRoute | undefined {
  const headerId = req.headers.get(sandboxIdHeader);
  const headerPort = req.headers.get(sandboxPortHeader);
  if (headerId !== null || headerPort !== null) {
    const port = parsePort((headerPort ?? "").trim());
    if (port === undefined) return { kind: "bad", message: "invalid sandbox port" };
    const sandboxId = (headerId ?? "").trim();
    if (!/^[a-z0-9]+$/.test(sandboxId)) return { kind: "bad", message: "invalid sandbox id" };
    return { kind: "sandbox", sandboxId, port, via: "headers" };
  }
  const match = sandboxHost.exec(hostName(req.headers.get("host") ?? ""));
  if (match) {
    const port = parsePort(match[1] ?? "");
    if (port === undefined) return { kind: "bad", message: "invalid sandbox port" };
    return { kind: "sandbox", sandboxId: match[2] ?? "", port, via: "host" };
  }
  const { pathname, search } = splitRequestUrl(req.url);
  const query = new URLSearchParams(search);
  const signature = query.get("signature");
  if (pathname === "/files" && signature && (req.method === "GET" || req.method === "POST")) {
    const route: SignedFilesRoute = {
      kind: "signed-files",
      operation: req.method === "GET" ? "read" : "write",
      path: query.get("path") ?? "",
      username: query.get("username") ?? "",
      signature,
    };
    const expiration = query.get("signature_expiration");
    if (expiration !== null) route.expiration = expiration;
    return route;
  }
  return undefined;
}

/**
 * envd routes that only the agent may call (E2B marks them `x-internal`): reaching `/init` from the
 * outside could reset the access token or the environment of a running sandbox.
 */
const envdInternalRoutes = new Set(["/init", "/freeze", "/unfreeze", "/fsfreeze", "/fsthaw", "/collapse", "/upgrade"]);

/** Whether a path of envd's port is internal and must be refused by the public proxy. */
export function isEnvdInternalRoute(port: number, pathname: string): boolean {
  if (port !== envdPort) return false;
  const normalized = `/${pathname.split("/").filter(Boolean).join("/")}`;
  return envdInternalRoutes.has(normalized.toLowerCase());
}
