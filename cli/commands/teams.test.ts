import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IsolationClass, Runtime } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { type CliCommand, runCli, serveOnLoopback } from "../../test/helpers/cli-run.js";
import { addFakeHost, createEdgeHarness, type EdgeHarness } from "../../test/helpers/edge-app.js";
import { hostsCommand } from "./hosts.js";
import { teamsCommand } from "./teams.js";

// `wrenn teams` and `wrenn hosts` against a test edge served on loopback.
let h: EdgeHarness;
let server: Awaited<ReturnType<typeof serveOnLoopback>>;

beforeAll(async () => {
  h = await createEdgeHarness();
  await addFakeHost(h, (a) => {
    a.runtime = Runtime.GVISOR;
    a.isolation = IsolationClass.GVISOR;
  });
  server = await serveOnLoopback(h.app.fetch);
}, 60_000);

afterAll(async () => {
  await server?.close();
  await h?.close();
});

/** Runs a command with a key; returns its exit code and what it printed. */
function run(command: CliCommand, args: string[], key: string) {
  return runCli(command, [...args, "--api-url", server.url, "--api-key", key]);
}

describe("wrenn hosts", () => {
  it("shows each host's runtime and isolation class", async () => {
    const { code, out } = await run(hostsCommand, ["list"], h.adminKey);
    expect(code).toBe(0);
    expect(out).toMatch(/ISOLATION/);
    expect(out).toMatch(/gvisor\s+gvisor/);
  });
});

describe("wrenn teams", () => {
  it("an admin sets limits and the isolation minimum; the team sees them with its usage", async () => {
    const team = await h.newTeam();
    const set = await run(
      teamsCommand,
      ["set", team.teamId, "--min-isolation", "gvisor", "--max-running", "3", "--max-timeout", "2h"],
      h.adminKey,
    );
    expect(set.code).toBe(0);
    expect(set.out).toMatch(/min isolation:\s+gvisor/);
    const shown = await run(teamsCommand, ["show", "--json"], team.key);
    expect(JSON.parse(shown.out)).toMatchObject({
      id: team.teamId,
      minIsolation: "gvisor",
      quotas: { maxRunningSandboxes: 3, maxTimeoutSec: 7200 },
      quotaOverrides: { maxRunningSandboxes: 3, maxTimeoutSec: 7200 },
    });
    const human = await run(teamsCommand, ["show"], team.key);
    expect(human.out).toMatch(/running:\s+0 of 3\n/);
    expect(human.out).toMatch(/vcpus:\s+0 of 40 \(default\)/);
    const reset = await run(teamsCommand, ["set", team.teamId, "--reset", "maxRunningSandboxes", "--json"], h.adminKey);
    expect(JSON.parse(reset.out).quotaOverrides).toEqual({ maxTimeoutSec: 7200 });
  });

  it("a team key cannot change settings, and bad values are usage errors", async () => {
    const team = await h.newTeam();
    const denied = await run(teamsCommand, ["set", team.teamId, "--max-running", "100"], team.key);
    expect(denied.code).not.toBe(0);
    expect(denied.err).toMatch(/admin/);
    const bad = await run(teamsCommand, ["set", team.teamId, "--min-isolation", "container"], h.adminKey);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--min-isolation takes vm, gvisor, namespace or none/);
  });
});
