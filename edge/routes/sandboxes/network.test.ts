import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ConnectionProtocol, ConnectionVerdict, NameSource } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import {
  expectError,
  newSandbox,
  routeStack,
  sandboxRow,
  updateSandboxRow,
} from "../../../test/helpers/edge-routes.js";

const stack = routeStack();

const policy = { allowOut: ["*.example.test", "192.88.99.7"], denyOut: ["0.0.0.0/0"] };

describe("sandbox network (egress policy)", () => {
  it("takes a policy at create, passes it to the agent, stores and returns it", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key, { network: policy, internetAccess: false });
    expect(sb).toMatchObject({ network: policy, internetAccess: false });
    const agentSandbox = stack.agent.sandboxes.get(sb.id)?.sandbox;
    expect(agentSandbox?.network?.allowOut).toEqual(policy.allowOut);
    expect(agentSandbox?.network?.denyOut).toEqual(policy.denyOut);
    expect(agentSandbox?.internetAccess).toBe(false);
    expect((await sandboxRow(stack.h, sb.id))?.network).toEqual(policy);
    const got = await stack.h.request("GET", `/v1/sandboxes/${sb.id}`, { key: team.key });
    expect(await got.json()).toMatchObject({ network: policy, internetAccess: false });
    // Without rules: no policy on the wire, as before.
    const plain = await newSandbox(stack.h, team.key);
    expect(plain).toMatchObject({ network: null, internetAccess: true });
    expect(stack.agent.sandboxes.get(plain.id)?.sandbox.network).toBeUndefined();
  });

  it("refuses a bad entry with INVALID_NETWORK_POLICY naming it, before any agent call", async () => {
    const team = await stack.h.newTeam();
    const calls = stack.agent.calls.length;
    const res = await stack.h.request("POST", "/v1/sandboxes", {
      key: team.key,
      json: { network: { allowOut: ["example.test", "10.0.0.0/33"] } },
    });
    const body = await expectError(res, 400, "INVALID_NETWORK_POLICY");
    expect(body.error.message).toContain("10.0.0.0/33");
    expect(body.error.message).toContain("network.allowOut");
    expect(body.error.details).toHaveProperty(["network.allowOut"]);
    expect(stack.agent.calls.slice(calls).filter((c) => c.startsWith("createSandbox"))).toEqual([]);
  });

  it("replaces the rules of a running sandbox (an omitted list is cleared) and records it", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key, { network: policy });
    const res = await stack.h.request("PUT", `/v1/sandboxes/${sb.id}/network`, {
      key: team.key,
      json: { allowOut: ["pypi.org"], internetAccess: false },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      network: { allowOut: ["pypi.org"], denyOut: [] },
      internetAccess: false,
    });
    const agentSandbox = stack.agent.sandboxes.get(sb.id)?.sandbox;
    expect(agentSandbox?.network?.allowOut).toEqual(["pypi.org"]);
    expect(agentSandbox?.network?.denyOut).toEqual([]);
    expect(agentSandbox?.internetAccess).toBe(false);
    expect((await sandboxRow(stack.h, sb.id))?.network).toEqual({ allowOut: ["pypi.org"], denyOut: [] });

    const bad = await stack.h.request("PUT", `/v1/sandboxes/${sb.id}/network`, {
      key: team.key,
      json: { denyOut: ["*."] },
    });
    expect((await expectError(bad, 400, "INVALID_NETWORK_POLICY")).error.message).toContain('"*."');
  });

  it("refuses an update of a stopped sandbox and another team's", async () => {
    const team = await stack.h.newTeam();
    const other = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const foreign = await stack.h.request("PUT", `/v1/sandboxes/${sb.id}/network`, {
      key: other.key,
      json: { allowOut: [] },
    });
    await expectError(foreign, 404, "NOT_FOUND");
    await updateSandboxRow(stack.h, sb.id, { state: "stopped", stopReason: "killed" });
    const res = await stack.h.request("PUT", `/v1/sandboxes/${sb.id}/network`, { key: team.key, json: {} });
    await expectError(res, 409, "CONFLICT");
  });

  it("lists the connection log with filters and a cursor, also after the sandbox stopped", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key, { network: policy });
    stack.agent.addConnection(sb.id, {
      protocol: ConnectionProtocol.DNS,
      port: 53,
      addresses: ["192.88.99.7", "192.88.99.8"],
      name: "a.example.test",
      nameSource: NameSource.DNS,
      rule: "*.example.test",
      list: "allowOut",
    });
    stack.agent.addConnection(sb.id, {
      address: "192.88.99.9",
      port: 443,
      name: "forbidden.test",
      nameSource: NameSource.SNI,
      verdict: ConnectionVerdict.DENIED,
      rule: "0.0.0.0/0",
      list: "denyOut",
    });
    stack.agent.addConnection(sb.id, {
      address: "192.88.99.7",
      port: 443,
      name: "a.example.test",
      nameSource: NameSource.SNI,
      rule: "*.example.test",
      list: "allowOut",
      bytesOut: 517n,
      bytesIn: 4096n,
    });
    const all = await stack.h.request("GET", `/v1/sandboxes/${sb.id}/connections`, { key: team.key });
    expect(all.status).toBe(200);
    const page = (await all.json()) as { connections: Array<Record<string, unknown>>; nextAfter: number | null };
    expect(page.nextAfter).toBeNull();
    expect(page.connections).toHaveLength(3);
    expect(page.connections[0]).toMatchObject({
      seq: 1,
      protocol: "dns",
      address: null,
      port: 53,
      name: "a.example.test",
      nameSource: "dns",
      verdict: "allowed",
      bytesOut: null,
      addresses: ["192.88.99.7", "192.88.99.8"],
    });
    expect(page.connections[2]).toMatchObject({ address: "192.88.99.7", bytesOut: 517, bytesIn: 4096 });

    const denied = await stack.h.request("GET", `/v1/sandboxes/${sb.id}/connections?verdict=denied`, {
      key: team.key,
    });
    expect(((await denied.json()) as typeof page).connections.map((c) => c.name)).toEqual(["forbidden.test"]);

    const first = await stack.h.request("GET", `/v1/sandboxes/${sb.id}/connections?limit=2&protocol=tcp`, {
      key: team.key,
    });
    const firstPage = (await first.json()) as typeof page;
    expect(firstPage.connections.map((c) => c.seq)).toEqual([2, 3]);
    const next = await stack.h.request("GET", `/v1/sandboxes/${sb.id}/connections?after=2`, { key: team.key });
    expect(((await next.json()) as typeof page).connections.map((c) => c.seq)).toEqual([3]);

    // The host keeps the log after the sandbox ends: a stopped sandbox's log still reads.
    await stack.h.request("DELETE", `/v1/sandboxes/${sb.id}`, { key: team.key });
    const after = await stack.h.request("GET", `/v1/sandboxes/${sb.id}/connections`, { key: team.key });
    expect(((await after.json()) as typeof page).connections).toHaveLength(3);

    const bad = await stack.h.request("GET", `/v1/sandboxes/${sb.id}/connections?verdict=maybe`, { key: team.key });
    await expectError(bad, 400, "BAD_REQUEST");
  });

  it("answers 409 when the sandbox's host is gone and 503 when it does not answer", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    stack.agent.failNext("listConnections", Code.Unavailable);
    const down = await stack.h.request("GET", `/v1/sandboxes/${sb.id}/connections`, { key: team.key });
    await expectError(down, 503, "AGENT_UNAVAILABLE");
    await updateSandboxRow(stack.h, sb.id, { hostId: null, state: "stopped", stopReason: "lost" });
    const gone = await stack.h.request("GET", `/v1/sandboxes/${sb.id}/connections`, { key: team.key });
    expect((await expectError(gone, 409, "CONFLICT")).error.message).toMatch(/connection log is gone/);
  });

  it("streams the log as NDJSON and follows new entries until the client leaves", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    stack.agent.addConnection(sb.id, { address: "192.88.99.7", port: 80, verdict: ConnectionVerdict.ALLOWED });
    const abort = new AbortController();
    const res = await stack.h.app.request(`/v1/sandboxes/${sb.id}/connections/stream?verdict=denied`, {
      headers: { "x-api-key": team.key },
      signal: abort.signal,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("application/x-ndjson");
    const reader = res.body?.getReader();
    if (!reader) throw new Error("no body");
    stack.agent.addConnection(sb.id, {
      address: "192.88.99.9",
      port: 443,
      verdict: ConnectionVerdict.DENIED,
      rule: "0.0.0.0/0",
      list: "denyOut",
    });
    let text = "";
    while (!text.includes("\n")) {
      const chunk = await reader.read();
      if (chunk.done) break;
      text += new TextDecoder().decode(chunk.value);
    }
    const line = JSON.parse(text.split("\n")[0] ?? "") as Record<string, unknown>;
    expect(line).toMatchObject({ seq: 2, verdict: "denied", address: "192.88.99.9", rule: "0.0.0.0/0" });
    await reader.cancel();
    abort.abort();
    await expect.poll(() => stack.agent.cancelledStreams.includes(sb.id)).toBe(true);
  });
});

describe("E2B network", () => {
  const e2b = (key: string) => ({ "x-api-key": key });

  it("creates with network allowOut/denyOut and allow_internet_access, and GET returns them", async () => {
    const team = await stack.h.newTeam();
    const created = await stack.h.request("POST", "/v2/sandboxes", {
      key: team.key,
      json: { templateID: "base", network: { ...policy, allowPublicTraffic: true }, allow_internet_access: false },
    });
    expect(created.status).toBe(201);
    const { sandboxID } = (await created.json()) as { sandboxID: string };
    expect(stack.agent.sandboxes.get(sandboxID)?.sandbox.network?.allowOut).toEqual(policy.allowOut);
    const got = await stack.h.request("GET", `/sandboxes/${sandboxID}`, { headers: e2b(team.key) });
    expect(await got.json()).toMatchObject({
      allowInternetAccess: false,
      network: { ...policy, allowPublicTraffic: true },
    });
  });

  it("answers a bad entry and unsupported settings in E2B's error shape", async () => {
    const team = await stack.h.newTeam();
    for (const [network, text] of [
      [{ allowOut: ["not a host!"] }, "not a host!"],
      [{ rules: { "api.example.com": [{ transform: { headers: {} } }] } }, "network.rules is not supported by Wrenn"],
      [{ egressProxy: { address: "proxy:1080" } }, "network.egressProxy is not supported by Wrenn"],
      [{ maskRequestHost: "local host:8000" }, "network.maskRequestHost: must be a host name"],
      [{ maskRequestHost: "a\r\nx-evil: 1" }, "network.maskRequestHost: must be a host name"],
    ] as const) {
      const res = await stack.h.request("POST", "/v2/sandboxes", {
        key: team.key,
        json: { templateID: "base", network },
      });
      expect(res.status, JSON.stringify(network)).toBe(400);
      const body = (await res.json()) as { code: number; message: string };
      expect(body.code).toBe(400);
      expect(body.message).toContain(text);
    }
  });

  it("PUT /sandboxes/{id}/network replaces the rules (204), as the SDK's updateNetwork sends it", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key, { network: policy });
    const res = await stack.h.request("PUT", `/sandboxes/${sb.id}/network`, {
      key: team.key,
      json: { denyOut: ["0.0.0.0/0"], allow_internet_access: true },
    });
    expect(res.status).toBe(204);
    const agentSandbox = stack.agent.sandboxes.get(sb.id)?.sandbox;
    expect(agentSandbox?.network?.allowOut).toEqual([]);
    expect(agentSandbox?.network?.denyOut).toEqual(["0.0.0.0/0"]);
    expect(agentSandbox?.internetAccess).toBe(true);
    const got = await stack.h.request("GET", `/sandboxes/${sb.id}`, { headers: e2b(team.key) });
    expect(await got.json()).toMatchObject({ network: { allowOut: [], denyOut: ["0.0.0.0/0"] } });

    const bad = await stack.h.request("PUT", `/sandboxes/${sb.id}/network`, {
      key: team.key,
      json: { allowOut: ["1.2.3.4/40"] },
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toContain("1.2.3.4/40");

    await updateSandboxRow(stack.h, sb.id, { state: "stopped", stopReason: "killed" });
    const gone = await stack.h.request("PUT", `/sandboxes/${sb.id}/network`, { key: team.key, json: {} });
    expect(gone.status).toBe(404);
  });
});

describe("E2B allowPublicTraffic: false", () => {
  it("returns a traffic access token at create and connect, and the proxy requires it on the sandbox's ports", async () => {
    const team = await stack.h.newTeam();
    const created = await stack.h.request("POST", "/v2/sandboxes", {
      key: team.key,
      json: { templateID: "base", network: { allowPublicTraffic: false } },
    });
    expect(created.status).toBe(201);
    const { sandboxID, trafficAccessToken, envdAccessToken } = (await created.json()) as {
      sandboxID: string;
      trafficAccessToken: string | null;
      envdAccessToken: string;
    };
    expect(trafficAccessToken).toMatch(/^[A-Za-z0-9]{40}$/);
    const info = await stack.h.request("GET", `/sandboxes/${sandboxID}`, { key: team.key });
    expect(await info.json()).toMatchObject({ network: { allowOut: [], denyOut: [], allowPublicTraffic: false } });
    const connected = await stack.h.request("POST", `/sandboxes/${sandboxID}/connect`, {
      key: team.key,
      json: { timeout: 300 },
    });
    expect(((await connected.json()) as { trafficAccessToken: string }).trafficAccessToken).toBe(trafficAccessToken);

    const toPort = (port: number, headers: Record<string, string> = {}) =>
      stack.h.app.request("/", {
        headers: { "e2b-sandbox-id": sandboxID, "e2b-sandbox-port": String(port), ...headers },
      });
    const proxied = () => stack.agent.calls.filter((c) => c === `proxy GET ${sandboxID}`).length;
    const before = proxied();
    const refused = await toPort(8000);
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { message: string }).message).toMatch(/e2b-traffic-access-token/);
    expect((await toPort(8000, { "e2b-traffic-access-token": "wrong" })).status).toBe(403);
    expect(proxied()).toBe(before);
    await toPort(8000, { "e2b-traffic-access-token": trafficAccessToken ?? "" });
    expect(proxied()).toBe(before + 1);
    // envd keeps its own token: the traffic token is not asked for on port 49983.
    await toPort(49983, { "x-access-token": envdAccessToken });
    expect(proxied()).toBe(before + 2);

    // A sandbox with public traffic (the default) has no token and needs none.
    const open = await stack.h.request("POST", "/v2/sandboxes", { key: team.key, json: { templateID: "base" } });
    expect(((await open.json()) as { trafficAccessToken: string | null }).trafficAccessToken).toBeNull();
  });
});
