import { describe, expect, it } from "vitest";
import { expectError, newSandbox, routeStack } from "../../../test/helpers/edge-routes.js";

const stack = routeStack();

describe("files", () => {
  function form(path: string | undefined, content: Uint8Array<ArrayBuffer> | string): FormData {
    const f = new FormData();
    if (path !== undefined) f.set("path", path);
    f.set("file", new Blob([content]), "upload.bin");
    return f;
  }

  it("writes (multipart) and reads back byte-identical binary content", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const bytes = new Uint8Array(50_000).map((_, i) => (i * 7) & 0xff);
    const w = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/write`, {
      key: team.key,
      body: form("/home/user/data.bin", bytes),
    });
    expect(w.status).toBe(200);
    expect(await w.json()).toEqual({ path: "/home/user/data.bin", size: 50_000 });
    const r = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/read`, {
      key: team.key,
      json: { path: "/home/user/data.bin" },
    });
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("application/octet-stream");
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(bytes);
  });

  it("takes the path from the query string too", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const w = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/write?path=/home/user/q.txt`, {
      key: team.key,
      body: form(undefined, "q"),
    });
    expect(w.status).toBe(200);
    expect(stack.agent.sandboxes.get(sb.id)?.files.get("/home/user/q.txt")).toEqual(new TextEncoder().encode("q"));
  });

  it("answers 413 above the upload limit and leaves the file untouched", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const big = new Uint8Array(200 * 1024);
    const res = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/write`, {
      key: team.key,
      body: form("/home/user/big", big),
    });
    await expectError(res, 413, "PAYLOAD_TOO_LARGE");
    expect(stack.agent.sandboxes.get(sb.id)?.files.has("/home/user/big")).toBe(false);
  });

  it("answers 413 when a body without Content-Length grows past the limit", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const { bytes, contentType } = await (async () => {
      const req = new Request("http://x/", {
        method: "POST",
        body: form("/home/user/big2", new Uint8Array(100 * 1024)),
      });
      return { bytes: new Uint8Array(await req.arrayBuffer()), contentType: req.headers.get("content-type") ?? "" };
    })();
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < bytes.length; i += 8192) c.enqueue(bytes.slice(i, i + 8192));
        c.close();
      },
    });
    const res = await stack.h.app.request(`/v1/sandboxes/${sb.id}/files/write`, {
      method: "POST",
      headers: { "x-api-key": team.key, "content-type": contentType },
      body: stream,
      duplex: "half",
    } as RequestInit);
    await expectError(res, 413, "PAYLOAD_TOO_LARGE");
  });

  it("rejects uploads that are not multipart, lack a path or a file", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    await expectError(
      await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/write`, { key: team.key, json: { path: "/x" } }),
      400,
      "BAD_REQUEST",
    );
    await expectError(
      await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/write`, {
        key: team.key,
        body: form(undefined, "x"),
      }),
      400,
      "BAD_REQUEST",
    );
    const onlyPath = new FormData();
    onlyPath.set("path", "/x");
    await expectError(
      await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/write`, { key: team.key, body: onlyPath }),
      400,
      "BAD_REQUEST",
    );
  });

  it("answers 404 for a missing file and 503 when the agent is down", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    await expectError(
      await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/read`, { key: team.key, json: { path: "/nope" } }),
      404,
      "NOT_FOUND",
    );
    stack.agent.down = true;
    try {
      await expectError(
        await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/read`, { key: team.key, json: { path: "/nope" } }),
        503,
        "AGENT_UNAVAILABLE",
      );
      await expectError(
        await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/list`, { key: team.key, json: { path: "/" } }),
        503,
        "AGENT_UNAVAILABLE",
      );
    } finally {
      stack.agent.down = false;
    }
  });

  it("lists, makes directories and removes paths", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/write`, {
      key: team.key,
      body: form("/home/user/a.txt", "aaa"),
    });
    const mk = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/mkdir`, {
      key: team.key,
      json: { path: "/home/user/dir" },
    });
    expect(await mk.json()).toMatchObject({ entry: { path: "/home/user/dir", type: "directory" } });
    await expectError(
      await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/mkdir`, {
        key: team.key,
        json: { path: "/home/user/dir" },
      }),
      409,
      "CONFLICT",
    );
    const ls = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/list`, {
      key: team.key,
      json: { path: "/home/user" },
    });
    const listing = (await ls.json()) as { entries: Array<{ name: string; type: string; size: number }> };
    expect(listing.entries).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ name: "a.txt", type: "file", size: 3 }),
        expect.objectContaining({ name: "dir", type: "directory" }),
      ]),
    );
    expect(
      (
        await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/remove`, {
          key: team.key,
          json: { path: "/home/user/a.txt" },
        })
      ).status,
    ).toBe(204);
    await expectError(
      await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/remove`, {
        key: team.key,
        json: { path: "/home/user/a.txt" },
      }),
      404,
      "NOT_FOUND",
    );
    await expectError(
      await stack.h.request("POST", `/v1/sandboxes/${sb.id}/files/list`, { key: team.key, json: { path: "" } }),
      400,
      "BAD_REQUEST",
    );
  });
});
