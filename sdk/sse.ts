/** One Server-Sent Event. */
export interface ServerSentEvent {
  event: string;
  data: string;
}

/**
 * Parses a `text/event-stream` body into events as they arrive (WHATWG rules: `event:` and `data:`
 * fields, multi-line data joined with newlines, comments and unknown fields ignored, an event ends
 * at a blank line). Uses only web streams, so it runs on Node and on Workers.
 */
export async function* readServerSentEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<ServerSentEvent> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let buffer = "";
  let event = "";
  let data: string[] = [];
  const takeLine = (line: string): ServerSentEvent | undefined => {
    if (line === "") {
      const done = data.length > 0 ? { event: event || "message", data: data.join("\n") } : undefined;
      event = "";
      data = [];
      return done;
    }
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    return undefined;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let newline = buffer.search(/\r\n|\r|\n/);
      while (newline !== -1) {
        const line = buffer.slice(0, newline);
        const width = buffer.startsWith("\r\n", newline) ? 2 : 1;
        // A lone \r at the end may be the first half of \r\n: wait for the next chunk.
        if (!done && width === 1 && buffer[newline] === "\r" && newline === buffer.length - 1) break;
        buffer = buffer.slice(newline + width);
        const finished = takeLine(line);
        if (finished) yield finished;
        newline = buffer.search(/\r\n|\r|\n/);
      }
      if (done) {
        if (buffer !== "") {
          const finished = takeLine(buffer);
          if (finished) yield finished;
        }
        const last = takeLine("");
        if (last) yield last;
        return;
      }
    }
  } finally {
    reader.releaseLock();
    await body.cancel().catch(() => {});
  }
}
