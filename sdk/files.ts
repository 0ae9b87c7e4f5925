import { WrennError } from "./errors.js";
import { type ApiClient, segment } from "./http.js";
import type { EntryInfo, WrittenFileInfo } from "./types.js";

/** What `files.write` accepts. Streams and Blobs are sent without being buffered whole. */
export type WriteData = string | Uint8Array | ArrayBuffer | Blob | ReadableStream<Uint8Array>;

/** Options shared by file operations. */
export interface FileOptions {
  /** Linux user to act as; default the sandbox's user. */
  user?: string;
  signal?: AbortSignal;
}

const encoder = new TextEncoder();

function randomBoundary(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return `----wrenn${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/**
 * Wraps a byte stream in a one-part multipart/form-data body, chunk by chunk, so an upload of any
 * size is never held in memory (FormData cannot take a stream).
 */
function multipartStream(data: ReadableStream<Uint8Array>, boundary: string): ReadableStream<Uint8Array> {
  const head = encoder.encode(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="upload"\r\n` +
      "Content-Type: application/octet-stream\r\n\r\n",
  );
  const tail = encoder.encode(`\r\n--${boundary}--\r\n`);
  const reader = data.getReader();
  let started = false;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (!started) {
        started = true;
        controller.enqueue(head);
        return;
      }
      const { value, done } = await reader.read();
      if (done) {
        controller.enqueue(tail);
        controller.close();
      } else if (value.byteLength > 0) {
        controller.enqueue(value);
      }
    },
    async cancel(reason) {
      await reader.cancel(reason);
    },
  });
}

/** Moves files in and out of one sandbox. */
export class Files {
  constructor(
    private readonly api: ApiClient,
    private readonly sandboxId: string,
  ) {}

  private path(verb: string): string {
    return `/v1/sandboxes/${segment(this.sandboxId)}/files/${verb}`;
  }

  /** Writes (creates or replaces) a file, creating its parent directories. */
  async write(path: string, data: WriteData, options: FileOptions = {}): Promise<WrittenFileInfo> {
    const query = { path, user: options.user };
    const common = { query, timeoutMs: 0, ...(options.signal ? { signal: options.signal } : {}) };
    if (data instanceof ReadableStream) {
      const boundary = randomBoundary();
      return this.api.json<WrittenFileInfo>("POST", this.path("write"), {
        ...common,
        body: multipartStream(data, boundary),
        headers: { "content-type": `multipart/form-data; boundary=${boundary}` },
      });
    }
    const blob =
      data instanceof Blob
        ? data
        : new Blob([
            typeof data === "string" ? encoder.encode(data) : data instanceof ArrayBuffer ? data : data.slice(),
          ]);
    const form = new FormData();
    form.append("path", path);
    form.append("file", blob, "upload");
    return this.api.json<WrittenFileInfo>("POST", this.path("write"), { ...common, body: form });
  }

  /** Reads a file as text. */
  async read(path: string, options?: FileOptions & { format?: "text" }): Promise<string>;
  /** Reads a file as bytes. */
  async read(path: string, options: FileOptions & { format: "bytes" }): Promise<Uint8Array>;
  /** Opens a file as a byte stream (for large files: nothing is buffered). */
  async read(path: string, options: FileOptions & { format: "stream" }): Promise<ReadableStream<Uint8Array>>;
  async read(
    path: string,
    options: FileOptions & { format?: "text" | "bytes" | "stream" } = {},
  ): Promise<string | Uint8Array | ReadableStream<Uint8Array>> {
    const json: { path: string; user?: string } = { path };
    if (options.user) json.user = options.user;
    const res = await this.api.raw("POST", this.path("read"), {
      json,
      headers: { accept: "application/octet-stream" },
      timeoutMs: 0,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    switch (options.format ?? "text") {
      case "stream":
        if (!res.body) throw new WrennError("BAD_RESPONSE", `read ${path}: the answer has no body`);
        return res.body;
      case "bytes":
        return new Uint8Array(await res.arrayBuffer());
      default:
        return res.text();
    }
  }

  /** Lists a directory; `depth` 1 (default) lists direct children only. */
  async list(path: string, options: FileOptions & { depth?: number } = {}): Promise<EntryInfo[]> {
    const json: { path: string; user?: string; depth?: number } = { path };
    if (options.user) json.user = options.user;
    if (options.depth !== undefined) json.depth = options.depth;
    const res = await this.api.json<{ entries: EntryInfo[] }>("POST", this.path("list"), {
      json,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return res.entries;
  }

  /** Creates a directory and its parents; an existing path is a `CONFLICT` error. */
  async makeDir(path: string, options: FileOptions = {}): Promise<EntryInfo> {
    const json: { path: string; user?: string } = { path };
    if (options.user) json.user = options.user;
    const res = await this.api.json<{ entry: EntryInfo }>("POST", this.path("mkdir"), {
      json,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return res.entry;
  }

  /** Removes a file or a directory tree. */
  async remove(path: string, options: FileOptions = {}): Promise<void> {
    const json: { path: string; user?: string } = { path };
    if (options.user) json.user = options.user;
    await this.api.empty("POST", this.path("remove"), { json, ...(options.signal ? { signal: options.signal } : {}) });
  }
}
