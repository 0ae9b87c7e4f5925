import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { serveOnLoopback } from "../../test/helpers/cli-run.js";
import { createEdgeHarness, type EdgeHarness } from "../../test/helpers/edge-app.js";
import { addSnapshottingHost, type SnapshottingAgent } from "../../test/helpers/snapshotting-agent.js";
import { loadEnvironment } from "../config.js";
import type { CommandContext } from "../context.js";
import { sandboxCommand } from "./sandbox.js";
import { snapshotCommand } from "./snapshot.js";

// `wrenn snapshot …` and `wrenn sandbox fork|create --snapshot` against the edge on loopback (PGlite,
// a fake agent that keeps snapshots at the Connect boundary).
let h: EdgeHarness;
let agent: SnapshottingAgent;
let server: Awaited<ReturnType<typeof serveOnLoopback>>;
let key = "";

beforeAll(async () => {
  h = await createEdgeHarness();
  ({ agent } = await addSnapshottingHost(h));
  server = await serveOnLoopback(h.app.fetch);
  ({ key } = await h.newTeam());
}, 60_000);

afterAll(async () => {
  await server?.close();
  await h?.close();
});

async function run(
  command: typeof snapshotCommand,
  args: string[],
): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const ctx: CommandContext = {
    env: loadEnvironment({ HOME: "/nonexistent", XDG_CONFIG_HOME: "/nonexistent" }),
    output: { out: (s) => (out += `${s}\n`), err: (s) => (err += `${s}\n`), rawOut: () => {}, rawErr: () => {} },
    signal: new AbortController().signal,
  };
  const code = await command(ctx, [...args, "--api-url", server.url, "--api-key", key]);
  return { code, out, err };
}

describe("wrenn snapshot and sandbox fork", () => {
  it("create, list, sandbox create --snapshot, sandbox fork --count 2, delete", async () => {
    const made = (await (await h.request("POST", "/v1/sandboxes", { key, json: {} })).json()) as { id: string };
    agent.sandboxes.get(made.id)?.files.set("/home/user/a.txt", new TextEncoder().encode("a"));

    const created = await run(snapshotCommand, ["create", made.id, "--name", "cli-snap", "--json"]);
    expect(created.code).toBe(0);
    const snap = JSON.parse(created.out) as { id: string; name: string; keepsMemory: boolean };
    expect(snap).toMatchObject({ name: "cli-snap", keepsMemory: false });

    const listed = await run(snapshotCommand, ["list"]);
    expect(listed.out).toMatch(new RegExp(`${snap.id}\\s+cli-snap\\s+ready\\s+${made.id}`));

    const fromSnap = await run(sandboxCommand, ["create", "--snapshot", snap.id, "-q"]);
    expect(fromSnap.code).toBe(0);
    const newId = fromSnap.out.trim();
    expect(new TextDecoder().decode(agent.sandboxes.get(newId)?.files.get("/home/user/a.txt"))).toBe("a");

    const forked = await run(sandboxCommand, ["fork", made.id, "--count", "2"]);
    expect(forked.code).toBe(0);
    const forkIds = forked.out.trim().split("\n");
    expect(forkIds).toHaveLength(2);
    for (const id of forkIds) expect(agent.sandboxes.has(id)).toBe(true);
    await expect(run(sandboxCommand, ["fork", made.id, "--count", "11"])).rejects.toThrow(/--count takes 1 to 10/);

    expect((await run(snapshotCommand, ["delete", snap.id])).code).toBe(0);
    await expect(run(snapshotCommand, ["delete", snap.id])).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect((await run(snapshotCommand, ["list"])).out.trim()).toBe("(none)");
  });
});
