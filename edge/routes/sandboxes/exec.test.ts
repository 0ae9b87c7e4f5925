import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { expectError, newSandbox, routeStack } from "../../../test/helpers/edge-routes.js";

const stack = routeStack();

describe("exec", () => {
  it("runs cmd under bash -l -c without args, and as given with args", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const res = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/exec`, {
      key: team.key,
      json: { cmd: "echo hello" },
    });
    expect(await res.json()).toEqual({
      stdout: "hello\n",
      stderr: "",
      exitCode: 0,
      encoding: "utf-8",
      truncated: false,
      durationMs: 1,
    });
    const direct = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/exec`, {
      key: team.key,
      json: { cmd: "exit", args: ["3"] },
    });
    expect(await direct.json()).toMatchObject({ exitCode: 3, stderr: "bye\n" });
    const stdin = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/exec`, {
      key: team.key,
      json: { cmd: "cat", args: [], stdin: "piped" },
    });
    expect(await stdin.json()).toMatchObject({ stdout: "piped" });
  });

  it("returns non-UTF-8 output as base64", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const res = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/exec`, {
      key: team.key,
      json: { cmd: "binary" },
    });
    const body = (await res.json()) as { stdout: string; encoding: string };
    expect(body.encoding).toBe("base64");
    expect([...Buffer.from(body.stdout, "base64")]).toEqual([0xff, 0xfe, 0x00, 0x41]);
  });

  it("streams events over SSE", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const res = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/exec/stream`, {
      key: team.key,
      json: { cmd: "echo streamed" },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/text\/event-stream/);
    const text = await res.text();
    const events = [...text.matchAll(/event: (\w+)\ndata: (.*)\n/g)].map((m) => [m[1], JSON.parse(m[2] ?? "null")]);
    expect(events).toEqual([
      ["start", { pid: 42 }],
      ["stdout", { data: "streamed\n", encoding: "utf-8" }],
      ["exit", { exitCode: 0 }],
    ]);
  });

  it("cancels the agent call when the client goes away", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const res = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/exec/stream`, {
      key: team.key,
      json: { cmd: "hang" },
    });
    const reader = res.body?.getReader();
    if (!reader) throw new Error("no body");
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toMatch(/event: start/);
    expect(stack.agent.cancelledStreams).not.toContain(sb.id);
    await reader.cancel();
    await expect.poll(() => stack.agent.cancelledStreams, { timeout: 5000 }).toContain(sb.id);
  });

  it("reports a stream failure as an error event", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    stack.agent.failNext("execStream", Code.Unavailable);
    const res = await stack.h.request("POST", `/v1/sandboxes/${sb.id}/exec/stream`, {
      key: team.key,
      json: { cmd: "echo x" },
    });
    expect(await res.text()).toMatch(/event: error\ndata: \{"code":"AGENT_UNAVAILABLE"/);
  });

  it("validates the body", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const body = await expectError(
      await stack.h.request("POST", `/v1/sandboxes/${sb.id}/exec`, { key: team.key, json: { args: [1] } }),
      400,
      "BAD_REQUEST",
    );
    expect(Object.keys(body.error.details ?? {})).toEqual(expect.arrayContaining(["json.cmd", "json.args.0"]));
  });
});
