import { createHash } from "node:crypto";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { afterEach, describe, expect, it } from "vitest";
import { streamLargeBodies } from "./request-body.js";

type Server = ReturnType<typeof serve>;
let server: Server | undefined;

afterEach(async () => {
  const s = server;
  server = undefined;
  if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
});

/** Serves an app that reports, per request, the body's digest and whether its chunks arrived as Node Buffers. */
async function start(): Promise<string> {
  const app = new Hono();
  app.post("/echo", async (c) => {
    const body = c.req.raw.body;
    if (!body) return c.json({ size: 0, buffers: false, digest: "" });
    const hash = createHash("sha256");
    let size = 0;
    let buffers = true;
    for await (const chunk of body) {
      buffers &&= Buffer.isBuffer(chunk);
      hash.update(chunk);
      size += chunk.length;
    }
    return c.json({ size, buffers, digest: hash.digest("hex") });
  });
  const s = serve({ fetch: streamLargeBodies(app.fetch), port: 0, hostname: "127.0.0.1" });
  server = s;
  await new Promise<void>((resolve) => s.once("listening", () => resolve()));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

describe("streamLargeBodies", () => {
  it("hands large bodies to the app as the request's own Buffers, intact", async () => {
    const base = await start();
    const payload = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < payload.length; i += 997) payload[i] = i & 0xff;
    const res = await fetch(`${base}/echo`, { method: "POST", body: payload });
    expect(await res.json()).toEqual({
      size: payload.length,
      buffers: true,
      digest: createHash("sha256").update(payload).digest("hex"),
    });
  });

  it("leaves small bodies to the server's own request", async () => {
    const base = await start();
    const res = await fetch(`${base}/echo`, { method: "POST", body: "small" });
    expect(await res.json()).toEqual({
      size: 5,
      buffers: false,
      digest: createHash("sha256").update("small").digest("hex"),
    });
  });
});
