import { randomBytes } from "node:crypto";
import { createWriteStream, type WriteStream } from "node:fs";
import { chown, lstat, open, rename, stat, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip } from "node:zlib";
import busboy from "busboy";
import { checkFileSigning } from "../auth.js";
import { ensureDirs } from "../filesystem/service.js";
import type { Logger } from "../log.js";
import type { EnvdState } from "../state.js";
import { type LinuxUser, PathError, resolveUserPath } from "../users.js";
import type { MetadataStore } from "../xattr.js";
import { type EnvdRequest, type EnvdResponse, header, jsonError, jsonReply } from "./common.js";
import { sendFileRange } from "./send-file.js";

/** An HTTP failure with E2B's status and message. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Dependencies of the /files handlers. */
export interface FilesDeps {
  state: EnvdState;
  metadata: MetadataStore;
  logger: Logger;
}

/** One written file in the POST /files reply. */
interface WrittenFile {
  path: string;
  name: string;
  type: "file";
  metadata?: Record<string, string>;
}

const METADATA_HEADER_PREFIX = "x-metadata-";

/** `X-Metadata-<key>` headers as a lowercase-keyed map (first value wins; empty keys are dropped). */
export function metadataFromHeaders(req: EnvdRequest): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (!name.startsWith(METADATA_HEADER_PREFIX)) continue;
    const key = name.slice(METADATA_HEADER_PREFIX.length).toLowerCase();
    const first = Array.isArray(value) ? value[0] : value;
    if (key === "" || first === undefined) continue;
    // Node joins repeated custom headers with ", "; E2B keeps the first value.
    const distinct = "headersDistinct" in req ? req.headersDistinct[name]?.[0] : undefined;
    out[key] = distinct ?? first;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

async function authorize(
  req: EnvdRequest,
  url: URL,
  deps: FilesDeps,
  operation: "read" | "write",
): Promise<{ user: LinuxUser; path: string | undefined }> {
  const q = url.searchParams;
  const path = q.get("path") ?? undefined;
  const username = q.get("username") ?? undefined;
  const denied = checkFileSigning({
    token: deps.state.accessToken,
    headerToken: header(req, "x-access-token"),
    signature: q.get("signature") ?? undefined,
    signatureExpiration: q.get("signature_expiration") ?? undefined,
    username,
    path: path ?? "",
    operation,
    nowUnix: Math.floor(Date.now() / 1000),
  });
  if (denied) throw new HttpError(401, denied);
  const user = await deps.state.resolveUser(username);
  if (!user) throw new HttpError(401, `error looking up user '${username}': unknown user ${username}`);
  return { user, path };
}

function resolveFor(path: string, user: LinuxUser, state: EnvdState): string {
  try {
    return resolveUserPath(path, user, state.defaultWorkdir);
  } catch (err) {
    if (err instanceof PathError) throw new HttpError(400, `error resolving path '${path}': ${err.message}`);
    throw err;
  }
}

/** Parses a single `bytes=` range against `size`; undefined for no/unsupported range, "unsatisfiable" when out of bounds. */
export function parseRange(
  value: string | undefined,
  size: number,
): { start: number; end: number } | "unsatisfiable" | undefined {
  if (!value) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(value.trim());
  if (!m) return undefined; // multiple or malformed ranges: serve the whole file, which HTTP allows
  const [, a = "", b = ""] = m;
  if (a === "" && b === "") return undefined;
  if (a === "") {
    const n = Number(b);
    if (n === 0) return "unsatisfiable";
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === "" ? size - 1 : Math.min(Number(b), size - 1);
  if (start >= size || end < start) return "unsatisfiable";
  return { start, end };
}

/**
 * Whether to gzip a download. Only when gzip is the one coding the client names (the SDK's
 * `gzip: true` sends exactly that): fetch implementations and browsers advertise
 * "gzip, deflate, br" on every request, and compressing already-compressed or random data on a
 * small guest costs far more CPU than it saves on a local link.
 */
export function wantsGzip(acceptEncoding: string | undefined): boolean {
  const codings = (acceptEncoding ?? "")
    .split(",")
    .map((part) => {
      const [coding = "", ...params] = part.trim().split(";");
      const q = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
      return { coding: coding.trim().toLowerCase(), q: q === undefined ? 1 : Number(q.slice(2)) };
    })
    .filter((c) => c.coding !== "" && c.coding !== "identity" && c.q > 0);
  return codings.length === 1 && codings[0]?.coding === "gzip";
}

/** RFC 6266 Content-Disposition for a file name, with an ASCII fallback. */
function contentDisposition(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, "_");
  return `inline; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

/** GET /files: streams a file, honouring a single Range and `Accept-Encoding: gzip`. */
export async function getFile(req: EnvdRequest, res: EnvdResponse, url: URL, deps: FilesDeps): Promise<void> {
  const { user, path } = await authorize(req, url, deps, "read");
  const resolved = resolveFor(path ?? "", user, deps.state);
  const st = await stat(resolved).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT" || err.code === "ENOTDIR") throw new HttpError(404, `path '${resolved}' does not exist`);
    throw new HttpError(500, `error checking if path exists '${resolved}': ${err.message}`);
  });
  if (st.isDirectory()) throw new HttpError(400, `path '${resolved}' is a directory`);
  if (!st.isFile()) throw new HttpError(400, `path '${resolved}' is not a regular file`);

  const headers: Record<string, string | number> = {
    "content-type": "application/octet-stream",
    "content-disposition": contentDisposition(basename(resolved)),
    "last-modified": st.mtime.toUTCString(),
    "accept-ranges": "bytes",
    vary: "Accept-Encoding",
  };
  const rangeHeader = header(req, "range");
  const range = parseRange(rangeHeader, st.size);
  if (range === "unsatisfiable") {
    res.writeHead(416, { ...headers, "content-range": `bytes */${st.size}` });
    res.end();
    return;
  }
  // Opened before any header goes out, so a file that vanished since the stat still gets a 404.
  const file = await open(resolved, "r").catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT" || err.code === "ENOTDIR") throw new HttpError(404, `path '${resolved}' does not exist`);
    throw new HttpError(500, `error opening file '${resolved}': ${err.message}`);
  });
  try {
    if (wantsGzip(header(req, "accept-encoding")) && !rangeHeader) {
      res.writeHead(200, { ...headers, "content-encoding": "gzip" });
      if (req.method === "HEAD") {
        res.end();
        return;
      }
      const gzip = file
        .createReadStream({ autoClose: false, highWaterMark: 1024 * 1024 })
        .pipe(createGzip({ level: 1, chunkSize: 256 * 1024 }));
      await pipeline(gzip, res as NodeJS.WritableStream).catch((err) => interrupted(res, resolved, err, deps));
      return;
    }
    const start = range ? range.start : 0;
    const end = range ? range.end : st.size - 1;
    res.writeHead(range ? 206 : 200, {
      ...headers,
      ...(range ? { "content-range": `bytes ${range.start}-${range.end}/${st.size}` } : {}),
      "content-length": end - start + 1,
    });
    if (req.method === "HEAD" || end < start) {
      res.end();
      return;
    }
    await sendFileRange(file, res, start, end).catch((err) => interrupted(res, resolved, err, deps));
  } finally {
    await file.close().catch(() => {});
  }
}

/** A download failed after its headers went out: all that is left is to cut the connection, so the client sees a short body. */
function interrupted(res: EnvdResponse, path: string, err: unknown, deps: FilesDeps): void {
  deps.logger.warn("file download interrupted", { path, err });
  res.destroy();
}

function errnoStatus(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e.code === "ENOSPC" || e.code === "EDQUOT") return new HttpError(507, "not enough disk space available");
  if (e.code === "ENOTDIR") return new HttpError(400, e.message);
  if (e.code === "EACCES" || e.code === "EPERM" || e.code === "EROFS") return new HttpError(403, e.message);
  if (e.code === "ECONNRESET" || e.message === "aborted") return new HttpError(400, "upload aborted by the client");
  if (e.code === "Z_DATA_ERROR" || e.code === "Z_BUF_ERROR")
    return new HttpError(400, `error decompressing request body: ${e.message}`);
  return new HttpError(500, `error writing file: ${e.message}`);
}

/**
 * Pipes `source` into `file`. Unlike stream.pipeline it does not destroy the source when the file
 * fails (say, the disk is full): the request stays readable, so the server can still answer 507
 * and discard the rest of the body instead of resetting the connection.
 */
function copyToFile(source: Readable, file: WriteStream): Promise<void> {
  return new Promise((resolve, reject) => {
    const fail = (err: Error) => {
      source.unpipe(file);
      file.destroy();
      reject(err);
    };
    file.once("error", (err) => {
      fail(err);
      // Read and discard the rest of the body: closing a socket with unread input resets it, and
      // the client would lose the error reply.
      source.resume();
    });
    source.once("error", fail);
    source.once("aborted", () => fail(new Error("aborted")));
    file.once("finish", () => {
      source.off("error", fail);
      resolve();
    });
    source.pipe(file);
  });
}

/**
 * Streams one upload into place: to a temp file beside the destination, then chown, metadata and
 * an atomic rename. Any failure removes the temp file, so the destination is either the old file
 * or the complete new one, never a partial write.
 */
async function writeUpload(
  source: Readable,
  destination: string,
  user: LinuxUser,
  metadata: Record<string, string> | undefined,
  deps: FilesDeps,
): Promise<WrittenFile> {
  const dir = dirname(destination);
  try {
    await ensureDirs(dir, user);
  } catch (err) {
    source.resume();
    throw errnoStatus(err);
  }
  const existing = await lstat(destination).catch(() => undefined);
  if (existing?.isDirectory()) {
    source.resume();
    throw new HttpError(400, `path is a directory: ${destination}`);
  }
  const tmp = join(dir, `.${basename(destination).slice(0, 180)}.wrenn-upload-${randomBytes(6).toString("hex")}`);
  const mode = existing?.isFile() ? existing.mode & 0o7777 : 0o644;
  try {
    await copyToFile(source, createWriteStream(tmp, { flags: "wx", mode, highWaterMark: 1024 * 1024 }));
    await chown(tmp, user.uid, user.gid);
    if (metadata) await deps.metadata.write(tmp, metadata);
    await rename(tmp, destination);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw errnoStatus(err);
  }
  const written: WrittenFile = { path: destination, name: basename(destination), type: "file" };
  if (metadata) written.metadata = metadata;
  return written;
}

/** The largest `file` part without a filename (busboy holds it in memory as a string). */
const TEXT_PART_MAX_BYTES = 16 * 1024 * 1024;

/** POST /files: multipart (`file` parts; filename = destination unless `path` is given) or octet-stream with `path`. */
export async function postFiles(req: EnvdRequest, res: EnvdResponse, url: URL, deps: FilesDeps): Promise<void> {
  const { user, path } = await authorize(req, url, deps, "write");
  const metadata = metadataFromHeaders(req);
  const contentType = (header(req, "content-type") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
  const encoding = (header(req, "content-encoding") ?? "identity").trim().toLowerCase();
  if (encoding !== "identity" && encoding !== "gzip") {
    (req as Readable).resume();
    throw new HttpError(400, `unsupported Content-Encoding: ${encoding}`);
  }
  const body: Readable = encoding === "gzip" ? (req as Readable).pipe(createGunzip()) : (req as Readable);
  if (encoding === "gzip") (req as Readable).on("error", (err) => body.destroy(err));

  if (contentType === "application/octet-stream") {
    if (path === undefined) {
      body.resume();
      throw new HttpError(400, "path query parameter is required for raw body upload");
    }
    const written = await writeUpload(body, resolveFor(path, user, deps.state), user, metadata, deps);
    jsonReply(res, [written]);
    return;
  }
  if (!contentType.startsWith("multipart/")) {
    body.resume();
    throw new HttpError(
      400,
      `unsupported content type: ${contentType}, expected multipart/form-data or application/octet-stream`,
    );
  }
  const written = await handleMultipart(req, body, path, user, metadata, deps);
  jsonReply(res, written);
}

function handleMultipart(
  req: EnvdRequest,
  body: Readable,
  path: string | undefined,
  user: LinuxUser,
  metadata: Record<string, string> | undefined,
  deps: FilesDeps,
): Promise<WrittenFile[]> {
  return new Promise((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      // preservePath keeps the directories in each part's filename: it is the destination path.
      parser = busboy({
        headers: req.headers as Record<string, string>,
        preservePath: true,
        highWaterMark: 1024 * 1024,
        limits: { fieldSize: TEXT_PART_MAX_BYTES },
      });
    } catch (err) {
      body.resume();
      reject(new HttpError(400, `error parsing multipart form: ${(err as Error).message}`));
      return;
    }
    const written: WrittenFile[] = [];
    const seen = new Set<string>();
    let failure: HttpError | undefined;
    let chain: Promise<void> = Promise.resolve();
    const takePart = (stream: Readable, filename: string | undefined) => {
      chain = chain.then(async () => {
        if (failure) {
          stream.resume();
          return;
        }
        try {
          const target = path ?? filename;
          if (!target) throw new HttpError(400, "a file part has no filename and no path query parameter was given");
          const destination = resolveFor(target, user, deps.state);
          if (seen.has(destination)) {
            throw new HttpError(
              400,
              `you cannot upload multiple files to the same path '${destination}' in one upload request`,
            );
          }
          seen.add(destination);
          written.push(await writeUpload(stream, destination, user, metadata, deps));
        } catch (err) {
          failure = errnoStatus(err);
          stream.resume();
        }
      });
    };
    parser.on("file", (field, stream, info) => {
      if (field !== "file" || failure) {
        stream.resume();
        return;
      }
      takePart(stream, info.filename);
    });
    // A `file` part without a filename (what `FormData.append("file", "some text")` sends) is a form
    // field to busboy; E2B's envd writes it like any file part, to the `path` given in the query.
    parser.on("field", (field, value, info) => {
      if (field !== "file" || failure) return;
      if (info.valueTruncated) {
        failure = new HttpError(
          413,
          `a file part without a filename is read as text and may be at most ${TEXT_PART_MAX_BYTES} bytes; send it with a filename`,
        );
        return;
      }
      takePart(Readable.from([Buffer.from(value, "utf8")]), undefined);
    });
    parser.on("error", (err: Error) => {
      failure ??= new HttpError(400, `error reading form: ${err.message}`);
      body.unpipe(parser);
      body.resume();
      void chain.then(() => reject(failure));
    });
    parser.on("close", () => {
      void chain.then(() => (failure ? reject(failure) : resolve(written)));
    });
    body.on("error", (err) => parser.destroy(err));
    body.pipe(parser);
  });
}

/** Sends an HttpError (or a generic 500) in E2B's JSON shape. */
export function sendFilesError(res: EnvdResponse, err: unknown, logger: Logger): void {
  if (err instanceof HttpError) {
    jsonError(res, err.status, err.message);
    return;
  }
  logger.error("files request failed", { err });
  jsonError(res, 500, "internal error");
}
