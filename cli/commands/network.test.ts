import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConnectionProtocol, ConnectionVerdict, NameSource } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { Sandbox } from "../../sdk/sandbox.js";
import { runCli, serveOnLoopback } from "../../test/helpers/cli-run.js";
import { addFakeHost, createEdgeHarness, type EdgeHarness, type FakeAgent } from "../../test/helpers/edge-app.js";
import { loadEnvironment } from "../config.js";
import type { CommandContext } from "../context.js";
import { sandboxCommand } from "./sandbox.js";

// `wrenn sandbox network` / `connections` and the SDK's network methods against a test edge on loopback.
let h: EdgeHarness;
let agent: FakeAgent;
let server: Awaited<ReturnType<typeof serveOnLoopback>>;

beforeAll(async () => {
  h = await createEdgeHarness();
  ({ agent } = await addFakeHost(h));
  server = await serveOnLoopback(h.app.fetch);
}, 60_000);

afterAll(async () => {
  await server?.close();
  await h?.close();
});

function run(args: string[], key: string) {
  return runCli(sandboxCommand, [...args, "--api-url", server.url, "--api-key", key]);
}

async function newSandbox(key: string, args: string[] = []): Promise<string> {
  const { code, out } = await run(["create", "-q", ...args], key);
  expect(code).toBe(0);
  return out.trim();
}

function logSome(id: string): void {
  agent.addConnection(id, {
    protocol: ConnectionProtocol.DNS,
    port: 53,
    name: "a.example.test",
    nameSource: NameSource.DNS,
    rule: "*.example.test",
    list: "allowOut",
  });
  agent.addConnection(id, {
    address: "192.88.99.9",
    port: 443,
    name: "forbidden.test",
    nameSource: NameSource.SNI,
    verdict: ConnectionVerdict.DENIED,
    rule: "0.0.0.0/0",
    list: "denyOut",
  });
}

describe("wrenn sandbox network", () => {
  it("creates with rules, shows them, replaces them, switches the internet and clears them", async () => {
    const team = await h.newTeam();
    const id = await newSandbox(team.key, ["--allow", "*.example.test", "--deny", "0.0.0.0/0"]);
    expect(agent.sandboxes.get(id)?.sandbox.network?.allowOut).toEqual(["*.example.test"]);

    const shown = await run(["network", id], team.key);
    expect(shown.out).toMatch(/internet:\s+on/);
    expect(shown.out).toMatch(/allow out:\s+\*\.example\.test/);
    expect(shown.out).toMatch(/deny out:\s+0\.0\.0\.0\/0/);

    const replaced = await run(["network", id, "--allow", "192.88.99.7", "--allow", "pypi.org"], team.key);
    expect(replaced.code).toBe(0);
    expect(replaced.out).toMatch(/allow out:\s+192\.88\.99\.7, pypi\.org/);
    expect(replaced.out).toMatch(/deny out:\s+-/);

    // --internet alone keeps the lists.
    const off = await run(["network", id, "--internet", "off", "--json"], team.key);
    expect(JSON.parse(off.out)).toEqual({
      id,
      network: { allowOut: ["192.88.99.7", "pypi.org"], denyOut: [] },
      internetAccess: false,
    });
    expect(agent.sandboxes.get(id)?.sandbox.internetAccess).toBe(false);

    const cleared = await run(["network", id, "--clear"], team.key);
    expect(cleared.out).toMatch(/allow out:\s+-/);
    expect(agent.sandboxes.get(id)?.sandbox.network?.allowOut).toEqual([]);
  });

  it("reports a bad rule with the API's message and a usage error for a bad switch", async () => {
    const team = await h.newTeam();
    const id = await newSandbox(team.key);
    const bad = await run(["network", id, "--deny", "300.1.1.1"], team.key);
    expect(bad.code).not.toBe(0);
    expect(bad.err).toMatch(/INVALID_NETWORK_POLICY|300\.1\.1\.1/);
    const usage = await run(["network", id, "--internet", "maybe"], team.key);
    expect(usage.code).toBe(2);
    expect(usage.err).toMatch(/--internet takes on or off/);
  });
});

describe("wrenn sandbox connections", () => {
  it("prints the log as a table or JSON, filtered by verdict", async () => {
    const team = await h.newTeam();
    const id = await newSandbox(team.key);
    logSome(id);
    const table = await run(["connections", id], team.key);
    expect(table.code).toBe(0);
    expect(table.out).toMatch(/SEQ\s+TIME\s+PROTO\s+DESTINATION\s+NAME\s+VERDICT\s+RULE/);
    expect(table.out).toMatch(/dns\s+-\s+a\.example\.test \(dns\)\s+allowed\s+\*\.example\.test \[allowOut\]/);
    expect(table.out).toMatch(
      /tcp\s+192\.88\.99\.9:443\s+forbidden\.test \(sni\)\s+denied\s+0\.0\.0\.0\/0 \[denyOut\]/,
    );

    const denied = await run(["connections", id, "--verdict", "denied", "--json"], team.key);
    const entries = JSON.parse(denied.out) as Array<{ name: string; verdict: string }>;
    expect(entries.map((e) => [e.name, e.verdict])).toEqual([["forbidden.test", "denied"]]);
  });

  it("--follow prints entries as they come until interrupted", async () => {
    const team = await h.newTeam();
    const id = await newSandbox(team.key);
    logSome(id);
    const out: string[] = [];
    const interrupt = new AbortController();
    const ctx: CommandContext = {
      env: loadEnvironment({ HOME: "/nonexistent", XDG_CONFIG_HOME: "/nonexistent" }),
      output: { out: (l) => out.push(l), err: () => {}, rawOut: () => {}, rawErr: () => {} },
      signal: interrupt.signal,
    };
    const following = sandboxCommand(ctx, [
      "connections",
      id,
      "--follow",
      "--json",
      "--api-url",
      server.url,
      "--api-key",
      team.key,
    ]);
    await expect.poll(() => out.length, { timeout: 5000 }).toBe(2);
    agent.addConnection(id, { address: "192.88.99.7", port: 443, bytesOut: 10n, bytesIn: 20n });
    await expect.poll(() => out.length, { timeout: 5000 }).toBe(3);
    expect(JSON.parse(out[2] ?? "")).toMatchObject({ seq: 3, address: "192.88.99.7", bytesOut: 10, bytesIn: 20 });
    interrupt.abort();
    expect(await following).toBe(0);
    await expect.poll(() => agent.cancelledStreams.includes(id), { timeout: 5000 }).toBe(true);
  });
});

describe("SDK", () => {
  it("updateNetwork, connections (pages) and watchConnections", async () => {
    const team = await h.newTeam();
    const sandbox = await Sandbox.create({ apiUrl: server.url, apiKey: team.key, network: { denyOut: ["0.0.0.0/0"] } });
    expect(sandbox.info.network).toEqual({ allowOut: [], denyOut: ["0.0.0.0/0"] });
    const info = await sandbox.updateNetwork({ allowOut: ["api.example.test"], denyOut: ["0.0.0.0/0"] });
    expect(info.network?.allowOut).toEqual(["api.example.test"]);
    logSome(sandbox.id);
    const first = await sandbox.connections({ limit: 1 });
    expect(first.connections.map((c) => c.seq)).toEqual([1]);
    expect(first.nextAfter).toBe(1);
    const rest = await sandbox.connections({ after: first.nextAfter ?? 0 });
    expect(rest).toMatchObject({ connections: [{ seq: 2, verdict: "denied" }], nextAfter: null });

    const stop = new AbortController();
    const seen: number[] = [];
    for await (const entry of sandbox.watchConnections({ verdict: "denied", signal: stop.signal })) {
      seen.push(entry.seq);
      if (seen.length === 1) agent.addConnection(sandbox.id, { verdict: ConnectionVerdict.DENIED, address: "1.1.1.1" });
      else stop.abort();
    }
    expect(seen).toEqual([2, 3]);
  });
});
