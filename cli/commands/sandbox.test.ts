import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sandboxStates } from "../../edge/contracts/enums.js";
import { loadEnvironment } from "../config.js";
import type { CommandContext } from "../context.js";
import { sandboxCommand } from "./sandbox.js";

// `wrenn sandbox list --state …` against a loopback server that records what the CLI asked for.
let server: Server;
let apiUrl: string;
const asked: URL[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    asked.push(new URL(req.url ?? "/", "http://x"));
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ sandboxes: [], nextToken: null }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  apiUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server?.close(() => resolve()));
});

async function listStates(state: string): Promise<string[]> {
  asked.length = 0;
  const ctx: CommandContext = {
    env: loadEnvironment({ HOME: "/nonexistent", XDG_CONFIG_HOME: "/nonexistent" }),
    output: { out: () => {}, err: () => {}, rawOut: () => {}, rawErr: () => {} },
    signal: new AbortController().signal,
  };
  const code = await sandboxCommand(ctx, ["list", "--state", state, "--api-url", apiUrl, "--api-key", "wrn_test"]);
  expect(code).toBe(0);
  expect(asked.map((u) => u.pathname)).toEqual(["/v1/sandboxes"]);
  return (asked[0]?.searchParams.get("state") ?? "").split(",");
}

describe("wrenn sandbox list --state", () => {
  it("all asks for every state the API has", async () => {
    const states = await listStates("all");
    expect([...states].sort()).toEqual([...sandboxStates].sort());
    expect(states).toContain("missing");
  });

  it("a list asks for those states", async () => {
    expect(await listStates("running, paused")).toEqual(["running", "paused"]);
  });
});
