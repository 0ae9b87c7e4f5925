import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NodeEdge } from "../../edge/node.js";
import { IMAGES_ROOT, requireImage, requireRoot, TEMPLATE } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { startEdgeForAgent } from "../helpers/edge-stack.js";

/**
 * Uploads through the Node edge's streamed path (node:http to the agent, envd's raw-body upload) with a
 * real agent: a body that grows past the limit mid-stream answers 413 and leaves the sandbox's file as
 * it was, with no temp file behind; one under the limit arrives byte-identical.
 */

const adminKey = `wrn_it_admin_${randomBytes(16).toString("hex")}`;
const MiB = 1024 * 1024;
const limit = 8 * MiB;

/** A multipart body of unknown length (chunked), so only the streamed limit check can stop it. */
function streamedForm(path: string, file: Uint8Array): { body: ReadableStream<Uint8Array>; contentType: string } {
  const boundary = `it-${randomBytes(8).toString("hex")}`;
  const enc = new TextEncoder();
  const parts = [
    enc.encode(`--${boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\n${path}\r\n`),
    enc.encode(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n`),
    ...Array.from({ length: Math.ceil(file.length / MiB) }, (_, i) => file.subarray(i * MiB, (i + 1) * MiB)),
    enc.encode(`\r\n--${boundary}--\r\n`),
  ];
  let i = 0;
  return {
    contentType: `multipart/form-data; boundary=${boundary}`,
    body: new ReadableStream<Uint8Array>({
      pull(controller) {
        const part = parts[i++];
        if (part) controller.enqueue(part);
        else controller.close();
      },
    }),
  };
}

const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

describe("edge on Node: streamed uploads to a real sandbox", () => {
  let agent: AgentProcess | undefined;
  let edge: NodeEdge | undefined;
  let sandboxId = "";

  const api = (path: string, init: RequestInit = {}): Promise<Response> => {
    if (!edge) throw new Error("edge not started");
    return fetch(`${edge.url}${path}`, {
      ...init,
      headers: { "x-api-key": adminKey, ...(init.headers as Record<string, string> | undefined) },
    });
  };
  const json = (path: string, body: unknown) =>
    api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const upload = (path: string, file: Uint8Array) => {
    const form = streamedForm(path, file);
    return api(`/v1/sandboxes/${sandboxId}/files/write`, {
      method: "POST",
      headers: { "content-type": form.contentType },
      body: form.body,
      duplex: "half",
    } as RequestInit);
  };
  const read = async (path: string) =>
    new Uint8Array(await (await json(`/v1/sandboxes/${sandboxId}/files/read`, { path })).arrayBuffer());
  const names = async (dir: string): Promise<string[]> => {
    const res = await json(`/v1/sandboxes/${sandboxId}/files/list`, { path: dir });
    const listing = (await res.json()) as { entries: { name: string }[] };
    return listing.entries.map((e) => e.name);
  };

  beforeAll(async () => {
    requireRoot();
    await requireImage();
    agent = await startAgentProcess({ runtime: "namespace", rootDir: IMAGES_ROOT });
    edge = await startEdgeForAgent(agent, { adminKey, env: { WRENN_MAX_UPLOAD_BYTES: String(limit) } });
    const created = await json("/v1/sandboxes", { template: TEMPLATE, timeoutSec: 600 });
    expect(created.status).toBe(201);
    sandboxId = ((await created.json()) as { id: string }).id;
  });

  afterAll(async () => {
    await edge?.close().catch(() => {});
    await agent?.stop();
  });

  it("writes a streamed upload under the limit byte-identical", async () => {
    const file = randomBytes(6 * MiB);
    const res = await upload("/tmp/keep.bin", file);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ path: "/tmp/keep.bin", size: file.length });
    expect(sha(await read("/tmp/keep.bin"))).toBe(sha(file));
  });

  it("answers 413 when a streamed body grows past the limit, keeping the old file and no partial one", async () => {
    const before = await read("/tmp/keep.bin");
    const res = await upload("/tmp/keep.bin", randomBytes(limit + 4 * MiB));
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("PAYLOAD_TOO_LARGE");
    expect(sha(await read("/tmp/keep.bin"))).toBe(sha(before));
    // envd removes its temp file once it sees the aborted body.
    await expect
      .poll(async () => (await names("/tmp")).filter((n) => n.includes("wrenn-upload")), { timeout: 10_000 })
      .toEqual([]);
  });
});
