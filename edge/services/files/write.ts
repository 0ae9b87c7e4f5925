import type { TeamContext } from "../context.js";
import { BadRequestError, ServiceError } from "../errors.js";
import { loadRunningSandbox, type PlacedSandbox } from "../sandboxes/load.js";
import { readJsonLimited } from "./bounded-read.js";
import {
  envdAnswerMaxBytes,
  envdFailure,
  envdFilesQuery,
  envdHeaders,
  envdPort,
  proxyUnreachable,
} from "./envd-http.js";
import { MultipartError, multipartBoundary, readMultipart, readTextPart } from "./multipart.js";

/** A multipart upload as it arrived. */
export interface WriteFileInput {
  contentType: string | undefined;
  /** The request's Content-Length, when it sent one. */
  contentLength: number | undefined;
  body: ReadableStream<Uint8Array> | null;
  /** Destination path from the query string (the `path` form field may give it instead). */
  path?: string;
  user?: string;
}

/** What was written. */
export interface WrittenFile {
  path: string;
  size: number;
}

/** Bytes a multipart envelope may add around the file (headers, boundaries, the path field). */
const envelopeAllowance = 64 * 1024;

/**
 * Streams an uploaded file into a sandbox: the request's multipart body is parsed as it arrives and
 * its `file` part is piped, chunk by chunk, as the raw body of a request to envd's `/files` through
 * the agent's proxy. The whole file is never held in memory. A declared Content-Length over the
 * limit is refused before anything is sent; a body that grows past it is cut off with
 * PAYLOAD_TOO_LARGE.
 */
export async function writeFile(ctx: TeamContext, sandboxId: string, input: WriteFileInput): Promise<WrittenFile> {
  const limit = ctx.config.maxUploadBytes;
  if (input.contentLength !== undefined && input.contentLength > limit + envelopeAllowance) {
    throw new ServiceError("PAYLOAD_TOO_LARGE", `the upload is larger than the ${limit}-byte limit`);
  }
  const boundary = multipartBoundary(input.contentType);
  if (!boundary) {
    throw new BadRequestError("files/write takes multipart/form-data with a `path` field and a `file` part", {
      "content-type": "must be multipart/form-data with a boundary",
    });
  }
  if (!input.body) throw new BadRequestError("the request has no body", { file: "required" });
  const placed = await loadRunningSandbox(ctx, sandboxId);

  let path = input.path;
  let written: WrittenFile | undefined;
  try {
    for await (const part of readMultipart(input.body, boundary)) {
      if (part.name === "path" && part.filename === undefined) {
        path = (await readTextPart(part, 4096)).trim();
      } else if (part.name === "file") {
        if (written) throw new BadRequestError("send one `file` part per request", { file: "more than one" });
        if (!path) {
          throw new BadRequestError("give `path` before the `file` part (or as a query parameter)", {
            path: "required",
          });
        }
        written = await sendToEnvd(ctx, placed, path, part.body, limit, input.user);
      } else {
        await part.body.cancel();
      }
    }
  } catch (err) {
    if (err instanceof MultipartError) throw new BadRequestError(`invalid multipart body: ${err.message}`);
    throw err;
  }
  if (!written) throw new BadRequestError("the upload has no `file` part", { file: "required" });
  return written;
}

async function sendToEnvd(
  ctx: TeamContext,
  placed: PlacedSandbox,
  path: string,
  file: ReadableStream<Uint8Array>,
  limit: number,
  user: string | undefined,
): Promise<WrittenFile> {
  let size = 0;
  let tooLarge = false;
  const reader = file.getReader();
  // The file goes to envd as a raw body (envd's octet-stream upload, the path in the query), so
  // neither side frames or parses a second multipart envelope. Chunks are passed on as they come.
  const body = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
          return;
        }
        size += value.length;
        if (size > limit) {
          tooLarge = true;
          await reader.cancel().catch(() => {});
          controller.error(new ServiceError("PAYLOAD_TOO_LARGE", `the upload is larger than the ${limit}-byte limit`));
          return;
        }
        controller.enqueue(value);
      },
      async cancel(reason) {
        await reader.cancel(reason).catch(() => {});
      },
    },
    // A few chunks of read-ahead let reading from the client overlap writing to the agent.
    { highWaterMark: 4 },
  );
  let res: Response;
  try {
    res = await ctx.agents.proxy(placed.target, placed.sandbox.id, envdPort, envdFilesQuery(path, user), {
      method: "POST",
      headers: { ...(await envdHeaders(ctx, placed)), "content-type": "application/octet-stream" },
      body,
      requestId: ctx.requestId,
    });
  } catch (err) {
    if (tooLarge) throw new ServiceError("PAYLOAD_TOO_LARGE", `the upload is larger than the ${limit}-byte limit`);
    if (err instanceof ServiceError) throw err;
    throw proxyUnreachable(err, "write file");
  }
  if (tooLarge) {
    await res.body?.cancel();
    throw new ServiceError("PAYLOAD_TOO_LARGE", `the upload is larger than the ${limit}-byte limit`);
  }
  if (!res.ok) {
    await reader.cancel().catch(() => {});
    throw await envdFailure(res, "write", path);
  }
  let writtenPath = path;
  try {
    const entries: unknown = await readJsonLimited(res, envdAnswerMaxBytes);
    if (Array.isArray(entries) && entries[0] && typeof entries[0] === "object" && "path" in entries[0]) {
      const p = (entries[0] as { path: unknown }).path;
      if (typeof p === "string") writtenPath = p;
    }
  } catch {
    // envd's body is informational (the status already said it worked); an oversized one was cut off
  }
  ctx.logger.info("file written", { sandboxId: placed.sandbox.id, path: writtenPath, size });
  return { path: writtenPath, size };
}
