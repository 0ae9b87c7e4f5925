import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { build } from "esbuild";
import { describe, expect, it } from "vitest";
import { WrennError } from "./errors.js";
import { ApiClient } from "./http.js";
import { readServerSentEvents } from "./sse.js";

const sdkDir = import.meta.dirname;

function streamOf(chunks: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const c of chunks) controller.enqueue(encoder.encode(c));
      controller.close();
    },
  });
}

async function collect(chunks: string[]) {
  const events = [];
  for await (const e of readServerSentEvents(streamOf(chunks))) events.push(e);
  return events;
}

describe("readServerSentEvents", () => {
  it("parses events split across chunks, CRLF and multi-line data, and skips comments", async () => {
    const events = await collect([
      ": keepalive\n\nevent: std",
      'out\ndata: {"data":"a"}\r\n\r',
      "\nevent: exit\ndata: line1\ndata: line2\n\n",
      "data: no event name\n\n",
    ]);
    expect(events).toEqual([
      { event: "stdout", data: '{"data":"a"}' },
      { event: "exit", data: "line1\nline2" },
      { event: "message", data: "no event name" },
    ]);
  });

  it("yields a final event that lacks its blank line", async () => {
    expect(await collect(["event: exit\ndata: {}"])).toEqual([{ event: "exit", data: "{}" }]);
  });
});

describe("ApiClient", () => {
  it("sends the key and turns the API's error body into a WrennError with a hint", async () => {
    const seen: Request[] = [];
    const api = new ApiClient({
      apiUrl: "http://wrenn.test/",
      apiKey: "wrn_k",
      fetch: async (input, init) => {
        seen.push(new Request(input, init));
        return Response.json(
          { error: { code: "NOT_FOUND", message: "sandbox abc not found", requestId: "req_1" } },
          { status: 404 },
        );
      },
    });
    const err = await api.json("GET", "/v1/sandboxes/abc").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WrennError);
    expect(err).toMatchObject({ code: "NOT_FOUND", status: 404, requestId: "req_1", message: "sandbox abc not found" });
    expect((err as WrennError).hint).toMatch(/wrenn sandbox list/);
    expect(seen[0]?.url).toBe("http://wrenn.test/v1/sandboxes/abc");
    expect(seen[0]?.headers.get("x-api-key")).toBe("wrn_k");
  });

  it("reports an unreachable API as NETWORK_ERROR, and a non-JSON error body with its status", async () => {
    const down = new ApiClient({ apiUrl: "http://127.0.0.1:1", apiKey: "k" });
    await expect(down.json("GET", "/health")).rejects.toMatchObject({ code: "NETWORK_ERROR" });
    const proxy = new ApiClient({ fetch: async () => new Response("Bad Gateway", { status: 502 }) });
    await expect(proxy.json("GET", "/health")).rejects.toMatchObject({ code: "HTTP_502", status: 502 });
  });
});

describe("the SDK runs on Workers", () => {
  it("imports no node:* module", async () => {
    const files = (await readdir(sdkDir)).filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts"));
    expect(files.length).toBeGreaterThan(5);
    for (const file of files) {
      const text = await readFile(join(sdkDir, file), "utf8");
      expect(text, file).not.toMatch(/from\s+["']node:/);
      expect(text, file).not.toMatch(/import\(["']node:/);
    }
  });

  it("bundles for a browser-like platform with no Node built-ins and no schema code", async () => {
    const result = await build({
      entryPoints: [join(sdkDir, "index.ts")],
      bundle: true,
      platform: "browser",
      format: "esm",
      write: false,
      metafile: true,
      // What a browser app ships: minified, so the bound follows code, not comments.
      minify: true,
      logLevel: "silent",
    });
    const inputs = Object.keys(result.metafile.inputs);
    // Type-only imports of the edge's route schemas must not drag zod, hono or drizzle into the bundle.
    expect(inputs.filter((i) => /node_modules|edge\//.test(i))).toEqual([]);
    const size = result.outputFiles?.[0]?.contents.byteLength ?? 0;
    // 20.9 KB with events, webhooks, snapshots and command history (December 2026).
    expect(size).toBeLessThan(32_000);
  });
});
