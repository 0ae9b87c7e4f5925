import type { TeamContext } from "../context.js";
import { loadRunningSandbox } from "../sandboxes/load.js";
import { envdFailure, envdFilesQuery, envdHeaders, envdPort, proxyUnreachable } from "./envd-http.js";

/** A file being read: its bytes as a stream, and its size when envd said. */
export interface ReadFileResult {
  body: ReadableStream<Uint8Array>;
  size?: number;
}

/** Streams a file out of a sandbox through the agent's proxy to envd's `/files` (any size). */
export async function readFile(
  ctx: TeamContext,
  sandboxId: string,
  input: { path: string; user?: string },
  signal?: AbortSignal,
): Promise<ReadFileResult> {
  const placed = await loadRunningSandbox(ctx, sandboxId);
  let res: Response;
  try {
    res = await ctx.agents.proxy(placed.target, sandboxId, envdPort, envdFilesQuery(input.path, input.user), {
      method: "GET",
      headers: await envdHeaders(ctx, placed),
      requestId: ctx.requestId,
      ...(signal ? { signal } : {}),
    });
  } catch (err) {
    throw proxyUnreachable(err, "read file");
  }
  if (!res.ok || !res.body) throw await envdFailure(res, "read", input.path);
  const length = Number(res.headers.get("content-length") ?? Number.NaN);
  return Number.isFinite(length) ? { body: res.body, size: length } : { body: res.body };
}
