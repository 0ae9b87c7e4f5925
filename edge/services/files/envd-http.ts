import { BadUpstreamResponse } from "../../proxy/errors.js";
import type { TeamContext } from "../context.js";
import { ServiceError } from "../errors.js";
import type { PlacedSandbox } from "../sandboxes/load.js";
import { readTextPrefix } from "./bounded-read.js";

/** envd's port inside every guest. */
export const envdPort = 49983;

/** Query string of envd's `/files` for a path (and user, when given). */
export function envdFilesQuery(path: string, user?: string): string {
  const q = new URLSearchParams({ path });
  if (user) q.set("username", user);
  return `/files?${q.toString()}`;
}

/** The headers envd needs: its access token. */
export async function envdHeaders(ctx: TeamContext, placed: PlacedSandbox): Promise<Record<string, string>> {
  return { "x-access-token": await ctx.secrets.open(placed.sandbox.envdTokenSealed) };
}

/**
 * The most of an envd answer the edge reads whole (an upload's JSON answer, `/metrics`): envd's
 * answers are a few hundred bytes, and anything past this is a guest (root can replace envd) trying
 * to make the edge hold its bytes.
 */
export const envdAnswerMaxBytes = 64 * 1024;

/** How much of a failed answer's body becomes the error message. */
const envdMessageMaxBytes = 500;

async function envdMessage(res: Response): Promise<string> {
  // Only the start is read and the rest cancelled: a failed answer's body may be endless.
  const text = await readTextPrefix(res, envdMessageMaxBytes).catch(() => "");
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === "object" && "message" in parsed && typeof parsed.message === "string") {
      return parsed.message;
    }
  } catch {
    // not JSON: use the text
  }
  return text.trim() || res.statusText || `status ${res.status}`;
}

/** Turns a failed envd `/files` answer (through the agent proxy) into a ServiceError. */
export async function envdFailure(res: Response, what: string, path: string): Promise<ServiceError> {
  const message = await envdMessage(res);
  switch (res.status) {
    case 400:
      return new ServiceError("BAD_REQUEST", `${what} ${path}: ${message}`);
    case 404:
      return new ServiceError("NOT_FOUND", `${what} ${path}: not found`);
    case 409:
      return new ServiceError("CONFLICT", `${what} ${path}: ${message}`);
    case 413:
      return new ServiceError("PAYLOAD_TOO_LARGE", `${what} ${path}: ${message}`);
    case 507:
      return new ServiceError("CONFLICT", `${what} ${path}: the sandbox is out of disk space`);
    case 502:
    case 503:
    case 504:
      return new ServiceError("AGENT_UNAVAILABLE", `${what} ${path}: the sandbox is not answering`, { cause: message });
    default:
      return new ServiceError("AGENT_ERROR", `${what} ${path}: envd answered ${res.status}`, { cause: message });
  }
}

/** A network failure reaching the agent's proxy, or an answer from envd that is not HTTP the edge can read. */
export function proxyUnreachable(err: unknown, what: string): ServiceError {
  if (err instanceof BadUpstreamResponse) {
    return new ServiceError("SANDBOX_BAD_RESPONSE", `${what}: envd answered a malformed response (${err.message})`, {
      cause: err,
    });
  }
  return new ServiceError("AGENT_UNAVAILABLE", `${what}: the host agent is unavailable; try again`, { cause: err });
}
