import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, serveOnLoopback } from "../../test/helpers/cli-run.js";
import { createEdgeHarness, type EdgeHarness } from "../../test/helpers/edge-app.js";
import { webhooksCommand } from "./webhooks.js";

// `wrenn webhooks` against a test edge served on loopback (nothing is delivered: the URL is only stored).
let h: EdgeHarness;
let server: Awaited<ReturnType<typeof serveOnLoopback>>;

beforeAll(async () => {
  h = await createEdgeHarness();
  server = await serveOnLoopback(h.app.fetch);
}, 60_000);

afterAll(async () => {
  await server?.close();
  await h?.close();
});

function run(args: string[], key: string) {
  return runCli(webhooksCommand, [...args, "--api-url", server.url, "--api-key", key]);
}

describe("wrenn webhooks", () => {
  it("creates (printing the secret once), lists, updates, shows deliveries, and deletes", async () => {
    const team = await h.newTeam();
    const created = await run(
      ["create", "https://hooks.example.com/w", "--event", "sandbox.killed,sandbox.timed_out"],
      team.key,
    );
    expect(created.code).toBe(0);
    expect(created.out.trim()).toMatch(/^whsec_[A-Za-z0-9]{40}$/);
    const id = /created (wh_[a-z0-9]+)/.exec(created.err)?.[1] ?? "";
    expect(id).not.toBe("");

    const listed = await run(["list"], team.key);
    expect(listed.out).toContain(id);
    expect(listed.out).toContain("sandbox.killed,sandbox.timed_out");
    expect(listed.out).not.toContain(created.out.trim());

    const updated = await run(["update", id, "--disable", "--json"], team.key);
    expect(JSON.parse(updated.out)).toMatchObject({ id, enabled: false });
    const log = await run(["deliveries", id, "--json"], team.key);
    expect(JSON.parse(log.out)).toEqual({ deliveries: [] });
    expect((await run(["delete", id], team.key)).code).toBe(0);
    expect((await run(["list", "--json"], team.key)).out.trim()).toBe("[]");
  });

  it("explains a refused URL and a missing argument", async () => {
    const team = await h.newTeam();
    const refused = await run(["create", "http://127.0.0.1:8080/"], team.key);
    expect(refused.code).not.toBe(0);
    expect(refused.err).toMatch(/loopback/);
    const missing = await run(["redeliver", "wh_x"], team.key);
    expect(missing.code).not.toBe(0);
    expect(missing.err).toMatch(/needs a webhook id and a delivery id/);
  });
});
