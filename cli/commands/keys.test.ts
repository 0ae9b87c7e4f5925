import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, serveOnLoopback } from "../../test/helpers/cli-run.js";
import { createEdgeHarness, type EdgeHarness } from "../../test/helpers/edge-app.js";
import { keysCommand } from "./keys.js";

// `wrenn keys` with scopes, expiry and rate limits, against a test edge served on loopback.
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

/** Runs `wrenn keys …` with a key; returns its exit code and what it printed. */
function run(args: string[], key: string) {
  return runCli(keysCommand, [...args, "--api-url", server.url, "--api-key", key]);
}

describe("wrenn keys", () => {
  it("creates a key with scopes and an expiry, narrows it, sets its rate (admin), and lists all of it", async () => {
    const team = await h.newTeam();
    const before = Date.now();
    const created = await run(
      [
        "create",
        "--name",
        "ci",
        "--scope",
        "sandboxes:read,sandboxes:write",
        "--scope",
        "keys:read",
        "--expires",
        "2h",
        "--json",
      ],
      team.key,
    );
    expect(created.code).toBe(0);
    const key = JSON.parse(created.out) as { id: string; secret: string; scopes: string[]; expiresAt: string };
    expect(key.scopes).toEqual(["sandboxes:read", "sandboxes:write", "keys:read"]);
    const expires = Date.parse(key.expiresAt) - before;
    expect(expires).toBeGreaterThan(7_190_000);
    expect(expires).toBeLessThan(7_300_000);

    // The new key lists keys but cannot make them.
    expect((await run(["list"], key.secret)).code).toBe(0);
    const refused = await run(["create"], key.secret);
    expect(refused.code).not.toBe(0);
    expect(refused.err).toMatch(/INSUFFICIENT_SCOPE|keys:write/);

    const narrowed = await run(["update", key.id, "--scope", "sandboxes:read"], team.key);
    expect(narrowed.code).toBe(0);
    expect(narrowed.out).toContain("sandboxes:read");

    const rateByTeam = await run(["update", key.id, "--rate", "5", "--burst", "10"], team.key);
    expect(rateByTeam.code).not.toBe(0);
    const rateByAdmin = await run(["update", key.id, "--rate", "5", "--burst", "10"], h.adminKey);
    expect(rateByAdmin.code).toBe(0);

    const listed = await run(["list"], team.key);
    expect(listed.out).toMatch(/SCOPES/);
    const row = listed.out.split("\n").find((l) => l.startsWith(key.id));
    expect(row).toMatch(/sandboxes:read\s/);
    expect(row).toMatch(/5\/s, 10/);
  });

  it("refuses unknown scopes and bad expiries before calling the API", async () => {
    const bad = await run(["create", "--scope", "sandboxes:everything"], h.adminKey);
    expect(bad.code).not.toBe(0);
    expect(bad.err).toContain("unknown scope sandboxes:everything");
    const when = await run(["create", "--expires", "next tuesday"], h.adminKey);
    expect(when.code).not.toBe(0);
    expect(when.err).toContain("--expires");
  });
});
