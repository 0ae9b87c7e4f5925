import { connect, type Socket } from "node:net";

/**
 * The HTTP/1.1 leg from the agent to a guest port, on a raw socket. Node's HTTP client parses every
 * response byte in JS callbacks and reads the socket 64 KiB at a time; on a large download that was
 * the agent's main cost (a third of the rate of a raw TCP relay). Here the request head is written by
 * hand, the response head is parsed once, and the body is passed on as it comes off the socket in
 * reads of up to 1 MiB. Responses framed by Content-Length or by the connection's close are relayed
 * without looking at their bytes; chunked ones are decoded (the client side re-frames them).
 */

/** Upstream reads land here; each read is copied out before the next, so one buffer serves every socket. */
const readBuffer = Buffer.allocUnsafe(1024 * 1024);
const maxHeadBytes = 64 * 1024;

/** The response head from the guest. */
export interface RelayHead {
  status: number;
  statusText: string;
  headers: Record<string, string | string[]>;
}

/** What the relay reports back to its caller (the proxy route). */
export interface RelayHandlers {
  /** The final (non-1xx) response head arrived. */
  onHead(head: RelayHead): void;
  /** A piece of the body; return false when the consumer is full (the relay pauses until `resume`). */
  onData(chunk: Buffer): boolean;
  onEnd(): void;
  /** The guest could not be reached, or the exchange broke; `beforeHead` tells which side of the head. */
  onError(err: NodeJS.ErrnoException, beforeHead: boolean): void;
}

/** A running exchange with the guest. */
export interface Relay {
  /** Sends request body bytes (framed as the request head announced). */
  write(chunk: Buffer): boolean;
  /** Ends the request body. */
  end(): void;
  resume(): void;
  destroy(): void;
  /** The socket, for "drain" on request body writes. */
  socket: Socket;
}

export interface RelayRequest {
  host: string;
  port: number;
  method: string;
  path: string;
  /** Headers to send, without hop-by-hop ones; the relay adds Host, Connection and the body framing. */
  headers: Record<string, string | string[]>;
  /** `length`: the body has this Content-Length; `chunked`: unknown length; `none`: no body. */
  body: { kind: "length"; bytes: number } | { kind: "chunked" } | { kind: "none" };
}

type BodyFraming = { kind: "length"; remaining: number } | { kind: "chunked" } | { kind: "close" } | { kind: "none" };

function parseHead(text: string): RelayHead | undefined {
  const lines = text.split("\r\n");
  const statusLine = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0] ?? "");
  if (!statusLine) return undefined;
  const headers: Record<string, string | string[]> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const existing = headers[name];
    if (existing === undefined) headers[name] = value;
    else if (Array.isArray(existing)) existing.push(value);
    else headers[name] = [existing, value];
  }
  return { status: Number(statusLine[1]), statusText: statusLine[2] ?? "", headers };
}

function framingOf(head: RelayHead, method: string): BodyFraming | Error {
  if (method === "HEAD" || head.status === 204 || head.status === 304) return { kind: "none" };
  const te = head.headers["transfer-encoding"];
  if (te !== undefined) {
    const codings = (Array.isArray(te) ? te.join(",") : te).toLowerCase();
    if (/\bchunked\s*$/.test(codings)) return { kind: "chunked" };
    return { kind: "close" };
  }
  const cl = head.headers["content-length"];
  if (cl !== undefined) {
    const value = Array.isArray(cl) ? cl[0] : cl;
    if (value === undefined || !/^\d+$/.test(value)) return new Error(`bad Content-Length from the guest: ${value}`);
    return { kind: "length", remaining: Number(value) };
  }
  return { kind: "close" };
}

/**
 * Decodes a chunked body incrementally: `push` takes raw bytes and calls `emit` with data; it
 * returns true once the last chunk and trailers have been seen.
 */
class ChunkedDecoder {
  #state: "size" | "data" | "data-crlf" | "trailers" | "done" = "size";
  #remaining = 0;
  #line = "";

  push(input: Buffer, emit: (data: Buffer) => void): boolean {
    let i = 0;
    while (i < input.length && this.#state !== "done") {
      if (this.#state === "data") {
        const take = Math.min(this.#remaining, input.length - i);
        emit(input.subarray(i, i + take));
        i += take;
        this.#remaining -= take;
        if (this.#remaining === 0) this.#state = "data-crlf";
        continue;
      }
      // Line-oriented states: read up to LF.
      const lf = input.indexOf(10, i);
      const end = lf === -1 ? input.length : lf;
      this.#line += input.toString("latin1", i, end);
      if (this.#line.length > 4096) throw new Error("chunk header line too long");
      i = lf === -1 ? input.length : lf + 1;
      if (lf === -1) break;
      const line = this.#line.replace(/\r$/, "");
      this.#line = "";
      if (this.#state === "data-crlf") {
        if (line !== "") throw new Error("missing CRLF after a chunk");
        this.#state = "size";
      } else if (this.#state === "size") {
        const size = Number.parseInt(line.split(";")[0]?.trim() ?? "", 16);
        if (!Number.isFinite(size) || size < 0) throw new Error(`bad chunk size ${JSON.stringify(line)}`);
        if (size === 0) this.#state = "trailers";
        else {
          this.#remaining = size;
          this.#state = "data";
        }
      } else if (this.#state === "trailers") {
        if (line === "") this.#state = "done";
      }
    }
    return this.#state === "done";
  }
}

/** Opens the connection, sends the request head and relays the response to `handlers`. */
export function startRelay(request: RelayRequest, handlers: RelayHandlers): Relay {
  let head: RelayHead | undefined;
  let headBytes: Buffer = Buffer.alloc(0);
  let framing: BodyFraming = { kind: "none" };
  const decoder = new ChunkedDecoder();
  let finished = false;
  let failed = false;

  const finish = () => {
    if (finished) return;
    finished = true;
    handlers.onEnd();
    socket.destroy();
  };
  const fail = (err: NodeJS.ErrnoException) => {
    if (finished || failed) return;
    failed = true;
    socket.destroy();
    handlers.onError(err, head === undefined);
  };
  const deliver = (data: Buffer) => {
    if (data.length > 0 && !handlers.onData(data)) socket.pause();
  };

  const onBody = (data: Buffer) => {
    switch (framing.kind) {
      case "length": {
        const take = Math.min(framing.remaining, data.length);
        framing.remaining -= take;
        deliver(data.subarray(0, take));
        if (framing.remaining === 0) finish();
        return;
      }
      case "chunked":
        if (decoder.push(data, deliver)) finish();
        return;
      case "close":
        deliver(data);
        return;
      case "none":
        finish();
    }
  };

  const onHeadBytes = (data: Buffer) => {
    headBytes = headBytes.length === 0 ? data : Buffer.concat([headBytes, data]);
    for (;;) {
      const end = headBytes.indexOf("\r\n\r\n");
      if (end === -1) {
        if (headBytes.length > maxHeadBytes) fail(new Error("the guest's response head is too long"));
        return;
      }
      const parsed = parseHead(headBytes.toString("latin1", 0, end));
      const rest = headBytes.subarray(end + 4);
      if (!parsed) {
        fail(new Error("the guest sent a malformed HTTP response"));
        return;
      }
      if (parsed.status >= 100 && parsed.status < 200) {
        // Interim answers (100 Continue, 103 Early Hints): the agent's server already answered the client's.
        headBytes = rest;
        continue;
      }
      const framed = framingOf(parsed, request.method);
      if (framed instanceof Error) {
        fail(framed);
        return;
      }
      head = parsed;
      framing = framed;
      handlers.onHead(parsed);
      if (framing.kind === "none" || (framing.kind === "length" && framing.remaining === 0)) {
        finish();
        return;
      }
      if (rest.length > 0) onBody(rest);
      return;
    }
  };

  const socket = connect({
    host: request.host,
    port: request.port,
    onread: {
      buffer: readBuffer,
      callback: (bytes, buffer) => {
        if (finished || failed) return false;
        // Copied out: the shared buffer is reused by the next read on any socket.
        const data = Buffer.from(buffer.subarray(0, bytes));
        try {
          if (head === undefined) onHeadBytes(data);
          else onBody(data);
        } catch (err) {
          fail(err as Error);
        }
        return true;
      },
    },
  });
  socket.setNoDelay(true);
  socket.on("error", (err) => fail(err));
  socket.on("end", () => {
    if (head !== undefined && framing.kind === "close") finish();
    else fail(Object.assign(new Error("the guest closed the connection early"), { code: "ECONNRESET" }));
  });
  socket.on("close", () => {
    if (!finished) fail(Object.assign(new Error("the guest connection closed"), { code: "ECONNRESET" }));
  });

  const lines = [`${request.method} ${request.path} HTTP/1.1`, `host: ${request.host}:${request.port}`];
  for (const [name, value] of Object.entries(request.headers)) {
    for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`);
  }
  lines.push("connection: close");
  if (request.body.kind === "length") lines.push(`content-length: ${request.body.bytes}`);
  if (request.body.kind === "chunked") lines.push("transfer-encoding: chunked");
  socket.write(`${lines.join("\r\n")}\r\n\r\n`, "latin1");

  const chunked = request.body.kind === "chunked";
  return {
    socket,
    write: (chunk) => {
      if (chunk.length === 0) return true;
      // Everything written in one turn (chunk frames, and the small pieces a client's framing leaves)
      // goes out in one writev, not as a syscall and a packet per piece.
      if (socket.writableCorked === 0) {
        socket.cork();
        process.nextTick(() => socket.uncork());
      }
      if (!chunked) return socket.write(chunk);
      socket.write(`${chunk.length.toString(16)}\r\n`, "latin1");
      socket.write(chunk);
      return socket.write("\r\n", "latin1");
    },
    end: () => {
      if (chunked) socket.write("0\r\n\r\n", "latin1");
    },
    resume: () => {
      if (!finished && !failed) socket.resume();
    },
    destroy: () => {
      finished = true;
      socket.destroy();
    },
  };
}
