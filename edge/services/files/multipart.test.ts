import { describe, expect, it } from "vitest";
import { MultipartError, multipartBoundary, readMultipart, readTextPart } from "./multipart.js";

/** Splits bytes into a stream of chunks of pseudo-random sizes, to hit every boundary position. */
function chunked(bytes: Uint8Array, seed: number, max = 37): ReadableStream<Uint8Array> {
  let offset = 0;
  let state = seed;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) {
        controller.close();
        return;
      }
      state = (state * 1103515245 + 12345) & 0x7fffffff;
      const size = 1 + (state % max);
      controller.enqueue(bytes.slice(offset, offset + size));
      offset += size;
    },
  });
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of stream) parts.push(chunk);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function encode(form: FormData): Promise<{ bytes: Uint8Array; boundary: string }> {
  const req = new Request("http://x/", { method: "POST", body: form });
  const boundary = multipartBoundary(req.headers.get("content-type") ?? "");
  if (!boundary) throw new Error("no boundary");
  return { bytes: new Uint8Array(await req.arrayBuffer()), boundary };
}

describe("readMultipart", () => {
  it("streams fields and binary files intact across every chunking", async () => {
    const file = new Uint8Array(5000);
    for (let i = 0; i < file.length; i++) file[i] = (i * 31 + 7) & 0xff;
    // Bytes that look like the start of a delimiter must survive.
    file.set(new TextEncoder().encode("\r\n--"), 100);
    const form = new FormData();
    form.set("path", "/home/user/a.bin");
    form.set("file", new Blob([file]), "a.bin");
    const { bytes, boundary } = await encode(form);
    // Chunks shorter and longer than the delimiter take different paths through the reader.
    for (let seed = 1; seed <= 40; seed++) {
      const seen: Record<string, Uint8Array | string> = {};
      for await (const part of readMultipart(chunked(bytes, seed, seed <= 20 ? 37 : 700), boundary)) {
        seen[part.name] = part.name === "path" ? await readTextPart(part, 100) : await collect(part.body);
        if (part.name === "file") expect(part.filename).toBe("a.bin");
      }
      expect(seen.path).toBe("/home/user/a.bin");
      expect(seen.file).toEqual(file);
    }
  });

  it("keeps near-misses of the delimiter that sit across chunk edges", async () => {
    const boundary = "b0undaryXyZ";
    const content = `a\r\n--b0undaryXy\r\n--b0undaryX\r\n--b0undar${"z".repeat(50)}\r\n--b0undaryXyQ end`;
    const body = new TextEncoder().encode(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n${content}\r\n--${boundary}--\r\n`,
    );
    for (let seed = 1; seed <= 60; seed++) {
      const parts: string[] = [];
      for await (const part of readMultipart(chunked(body, seed, 1 + (seed % 30)), boundary)) {
        parts.push(new TextDecoder().decode(await collect(part.body)));
      }
      expect(parts).toEqual([content]);
    }
  });

  it("skips parts the caller does not read", async () => {
    const form = new FormData();
    form.set("ignored", new Blob([new Uint8Array(3000)]), "z");
    form.set("path", "/x");
    const { bytes, boundary } = await encode(form);
    const names: string[] = [];
    for await (const part of readMultipart(chunked(bytes, 7), boundary)) {
      names.push(part.name);
      if (part.name === "path") expect(await readTextPart(part, 10)).toBe("/x");
    }
    expect(names).toEqual(["ignored", "path"]);
  });

  it("fails clearly on a truncated body", async () => {
    const form = new FormData();
    form.set("file", new Blob([new Uint8Array(1000)]), "f");
    const { bytes, boundary } = await encode(form);
    const cut = bytes.slice(0, bytes.length - 30);
    await expect(
      (async () => {
        for await (const part of readMultipart(chunked(cut, 3), boundary)) await collect(part.body);
      })(),
    ).rejects.toBeInstanceOf(MultipartError);
  });

  it("refuses oversized text fields", async () => {
    const form = new FormData();
    form.set("path", "x".repeat(200));
    const { bytes, boundary } = await encode(form);
    await expect(
      (async () => {
        for await (const part of readMultipart(chunked(bytes, 5), boundary)) await readTextPart(part, 100);
      })(),
    ).rejects.toThrow(/longer than 100/);
  });

  it("parses boundaries from content types", () => {
    expect(multipartBoundary("multipart/form-data; boundary=abc")).toBe("abc");
    expect(multipartBoundary('multipart/form-data; boundary="a b"')).toBe("a b");
    expect(multipartBoundary("application/json")).toBeUndefined();
    expect(multipartBoundary(undefined)).toBeUndefined();
  });
});
