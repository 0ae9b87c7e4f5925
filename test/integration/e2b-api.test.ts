import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { invalidApiKeyMessage } from "../../edge/routes/e2b/errors.js";
import { envdFileSignature } from "../../edge/services/e2b/signature.js";
import { addFakeHost, createEdgeHarness, type EdgeHarness, type FakeAgent } from "../helpers/edge-app.js";

/**
 * The E2B REST surface and the sandbox proxy's routing decisions over PGlite, with the host agent
 * replaced at its Connect boundary by the in-memory fake (the real stack and the official SDK are in
 * e2b-sdk.test.ts). Every answer is checked in E2B's shapes: `{code, message}` with code = status,
 * proxy refusals as 502 JSON.
 */

let h: EdgeHarness;
let agent: FakeAgent;
let key = "";

interface E2bSandbox {
  sandboxID: string;
  templateID: string;
  envdVersion: string;
  envdAccessToken: string;
  domain: string | null;
}

const e2b = (method: string, path: string, json?: unknown, headers: Record<string, string> = {}) =>
  h.request(method, path, { key, headers, ...(json !== undefined ? { json } : {}) });

async function create(body: Record<string, unknown> = {}, path = "/v2/sandboxes"): Promise<E2bSandbox> {
  const res = await e2b("POST", path, { templateID: "base", ...body });
  expect(res.status, await res.clone().text()).toBe(201);
  return (await res.json()) as E2bSandbox;
}

async function expectE2bError(res: Response, status: number, message?: RegExp | string): Promise<void> {
  const body = (await res.json()) as { code: number; message: string };
  expect({ status: res.status, code: body.code }).toEqual({ status, code: status });
  if (message !== undefined) expect(body.message).toMatch(message);
}

beforeAll(async () => {
  h = await createEdgeHarness({ config: { sandboxDomain: "sbx.wrenn.test" } });
  ({ agent } = await addFakeHost(h));
  ({ key } = await h.newTeam("e2b"));
}, 60_000);

afterAll(async () => {
  await h?.close();
});

describe("authentication", () => {
  it("answers a missing or unknown key with E2B's 401", async () => {
    await expectE2bError(await h.request("GET", "/v2/sandboxes"), 401, invalidApiKeyMessage);
    await expectE2bError(await h.request("GET", "/v2/sandboxes", { key: "e2b_notakey" }), 401, invalidApiKeyMessage);
    await expectE2bError(
      await h.request("POST", "/v2/sandboxes", { key: "wrn_nope", json: { templateID: "base" } }),
      401,
    );
  });

  it("accepts a Wrenn key in X-API-Key and in Authorization: Bearer", async () => {
    expect((await h.request("GET", "/v2/sandboxes", { headers: { "X-API-KEY": key } })).status).toBe(200);
    expect((await h.request("GET", "/v2/sandboxes", { headers: { authorization: `Bearer ${key}` } })).status).toBe(200);
  });
});

describe("create", () => {
  it("v2 defaults: 300 s timeout, kill on timeout, base → minimal, envd ≥ 0.6.4, token and domain", async () => {
    const before = Date.now();
    const sbx = await create({ metadata: { app: "v2" }, envVars: { A: "1" } });
    expect(sbx.sandboxID).toMatch(/^[a-z0-9]{20}$/);
    expect(sbx.templateID).toBe("minimal");
    expect(sbx.envdAccessToken.length).toBeGreaterThanOrEqual(32);
    expect(sbx.domain).toBe("sbx.wrenn.test");
    const [major = 0, minor = 0, patch = 0] = sbx.envdVersion.split(".").map(Number);
    expect(major * 1e6 + minor * 1e3 + patch).toBeGreaterThanOrEqual(6004);
    const info = (await (await e2b("GET", `/sandboxes/${sbx.sandboxID}`)).json()) as {
      endAt: string;
      state: string;
      metadata: Record<string, string>;
      lifecycle: { onTimeout: string; autoResume: boolean; keepMemory: boolean };
      cpuCount: number;
      memoryMB: number;
      envdAccessToken: string;
    };
    expect(info.state).toBe("running");
    expect(info.metadata).toEqual({ app: "v2" });
    expect(info.lifecycle).toEqual({ onTimeout: "kill", autoResume: false, keepMemory: true });
    expect(info.envdAccessToken).toBe(sbx.envdAccessToken);
    expect({ cpu: info.cpuCount, mem: info.memoryMB }).toEqual({ cpu: 2, mem: 512 });
    const endsIn = (Date.parse(info.endAt) - before) / 1000;
    expect(endsIn).toBeGreaterThan(295);
    expect(endsIn).toBeLessThan(310);
  });

  it("v1 defaults to a 15 s timeout; autoPause and autoResume become the lifecycle", async () => {
    const before = Date.now();
    const v1 = await create({}, "/sandboxes");
    const v1Info = (await (await e2b("GET", `/sandboxes/${v1.sandboxID}`)).json()) as { endAt: string };
    expect((Date.parse(v1Info.endAt) - before) / 1000).toBeLessThan(25);
    const paused = await create({ autoPause: true, autoResume: { enabled: true }, timeout: 60 });
    const info = (await (await e2b("GET", `/sandboxes/${paused.sandboxID}`)).json()) as {
      lifecycle: { onTimeout: string; autoResume: boolean; keepMemory: boolean };
    };
    expect(info.lifecycle).toEqual({ onTimeout: "pause", autoResume: true, keepMemory: true });
  });

  it("refuses bad input with E2B 400s and creates nothing", async () => {
    const count = agent.sandboxes.size;
    await expectE2bError(
      await e2b("POST", "/v2/sandboxes", { templateID: "base", timeout: 0 }),
      400,
      "Timeout must be greater than 0",
    );
    await expectE2bError(await e2b("POST", "/v2/sandboxes", { timeout: 10 }), 400, /templateID/);
    await expectE2bError(
      await e2b("POST", "/v2/sandboxes", { templateID: "base", autoPauseMemory: false }),
      400,
      /autoPause/,
    );
    await expectE2bError(
      await e2b("POST", "/v2/sandboxes", { templateID: "base", network: { allowOut: ["not a host!"] } }),
      400,
      /allowOut.*not a host!/,
    );
    await expectE2bError(
      await e2b("POST", "/v2/sandboxes", { templateID: "base", network: { rules: { "a.example.com": [{}] } } }),
      400,
      /network\.rules is not supported/,
    );
    await expectE2bError(await e2b("POST", "/v2/sandboxes", { templateID: "base", mcp: { x: {} } }), 400, /MCP/);
    await expectE2bError(await e2b("POST", "/v2/sandboxes", { templateID: "no/such" }), 400, /templateID/);
    await expectE2bError(await e2b("POST", "/v2/sandboxes", { templateID: "nosuch" }), 400);
    expect(agent.sandboxes.size).toBe(count);
  });

  it("passes network rules and allow_internet_access to the agent as the sandbox's egress policy", async () => {
    const made = await create({ network: { allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] } });
    const sandbox = agent.sandboxes.get(made.sandboxID)?.sandbox;
    expect(sandbox?.network?.allowOut).toEqual(["*.example.test"]);
    expect(sandbox?.network?.denyOut).toEqual(["0.0.0.0/0"]);
    // allowOut beats denyOut, and the switch decides only what no rule names: no contradiction.
    const both = await create({ allow_internet_access: false, network: { denyOut: ["0.0.0.0/0"] } });
    expect(agent.sandboxes.get(both.sandboxID)?.sandbox.internetAccess).toBe(false);
  });
});

describe("list", () => {
  it("filters by metadata and state and pages with X-Next-Token", async () => {
    const tag = `run-${Date.now()}`;
    const made: string[] = [];
    for (let i = 0; i < 5; i++) made.push((await create({ metadata: { tag, "odd key": `v ${i % 2}` } })).sandboxID);
    const pausedId = made[0] ?? "";
    expect((await e2b("POST", `/sandboxes/${pausedId}/pause`)).status).toBe(204);

    const query = (extra: string) =>
      `/v2/sandboxes?metadata=${encodeURIComponent(`tag=${encodeURIComponent(tag)}`)}${extra}`;
    const seen: string[] = [];
    let next: string | null = null;
    let pages = 0;
    do {
      const res = await e2b("GET", `${query("&limit=2")}${next ? `&nextToken=${encodeURIComponent(next)}` : ""}`);
      expect(res.status).toBe(200);
      const page = (await res.json()) as Array<{ sandboxID: string; state: string }>;
      expect(page.length).toBeLessThanOrEqual(2);
      seen.push(...page.map((s) => s.sandboxID));
      next = res.headers.get("x-next-token");
      pages++;
    } while (next && pages < 10);
    expect(pages).toBe(3);
    expect(seen.sort()).toEqual([...made].sort());

    const running = (await (await e2b("GET", query("&state=running"))).json()) as Array<{ sandboxID: string }>;
    expect(running.map((s) => s.sandboxID).sort()).toEqual(made.slice(1).sort());
    const paused = (await (await e2b("GET", query("&state=paused"))).json()) as Array<{ state: string }>;
    expect(paused.map((s) => s.state)).toEqual(["paused"]);
    const both = (await (await e2b("GET", query("&state=running,paused"))).json()) as unknown[];
    expect(both).toHaveLength(5);

    // The SDK encodes keys and values once more inside the metadata query.
    const odd = new URLSearchParams({ [encodeURIComponent("odd key")]: encodeURIComponent("v 1") }).toString();
    const oddRes = await e2b("GET", `/v2/sandboxes?metadata=${encodeURIComponent(odd)}`);
    expect(((await oddRes.json()) as unknown[]).length).toBe(2);

    await expectE2bError(await e2b("GET", query("&state=sleeping")), 400, /state/);
    const v1 = (await (await e2b("GET", "/sandboxes")).json()) as Array<{ sandboxID: string }>;
    expect(v1.map((s) => s.sandboxID)).not.toContain(pausedId);
  });
});

describe("list order and filters", () => {
  it("orders oldest first with order=asc, and filters by template and startedAfter before paging", async () => {
    const tag = `order-${Date.now()}`;
    const all: string[] = [];
    for (let i = 0; i < 5; i++) {
      all.push((await create({ metadata: { tag } })).sandboxID);
      await new Promise((r) => setTimeout(r, 5));
    }
    const byTag = `/v2/sandboxes?metadata=${encodeURIComponent(`tag=${tag}`)}`;
    const pageThrough = async (extra: string) => {
      const seen: string[][] = [];
      let next: string | null = null;
      do {
        const res = await e2b("GET", `${byTag}${extra}${next ? `&nextToken=${encodeURIComponent(next)}` : ""}`);
        expect(res.status, await res.clone().text()).toBe(200);
        seen.push(((await res.json()) as Array<{ sandboxID: string }>).map((s) => s.sandboxID));
        next = res.headers.get("x-next-token");
      } while (next && seen.length < 10);
      return seen;
    };
    expect(await pageThrough("&order=asc&limit=2")).toEqual([all.slice(0, 2), all.slice(2, 4), all.slice(4)]);
    expect((await pageThrough("&order=desc&limit=5")).flat()).toEqual([...all].reverse());
    // Filters act in the query: every page but the last is full.
    expect(await pageThrough("&order=asc&limit=2&template=base")).toEqual([
      all.slice(0, 2),
      all.slice(2, 4),
      all.slice(4),
    ]);
    expect(await pageThrough("&template=code-interpreter-v1")).toEqual([[]]);
    const second = (await (await e2b("GET", `/sandboxes/${all[1]}`)).json()) as { startedAt: string };
    expect(await pageThrough(`&order=desc&limit=2&startedAfter=${encodeURIComponent(second.startedAt)}`)).toEqual([
      [all[4], all[3]],
      [all[2]],
    ]);
    // A cursor from one order is refused in the other, rather than skipping or repeating sandboxes.
    const first = await e2b("GET", `${byTag}&order=asc&limit=1`);
    const token = first.headers.get("x-next-token") ?? "";
    await expectE2bError(
      await e2b("GET", `${byTag}&order=desc&limit=1&nextToken=${encodeURIComponent(token)}`),
      400,
      /order/,
    );
    // The team's quota of running sandboxes is shared by the whole file.
    for (const id of all) expect((await e2b("DELETE", `/sandboxes/${id}`)).status).toBe(204);
  });
});

describe("lifecycle", () => {
  it("pause answers 204 then 409; connect resumes (201) and then just extends (200)", async () => {
    const sbx = await create({ timeout: 60 });
    expect((await e2b("POST", `/sandboxes/${sbx.sandboxID}/pause`, {})).status).toBe(204);
    await expectE2bError(await e2b("POST", `/sandboxes/${sbx.sandboxID}/pause`, {}), 409, /already paused/);
    const resumed = await e2b("POST", `/v2/sandboxes/${sbx.sandboxID}/connect`, { timeout: 120 });
    expect(resumed.status).toBe(201);
    expect(((await resumed.json()) as E2bSandbox).envdAccessToken).toBe(sbx.envdAccessToken);
    const before = (await (await e2b("GET", `/sandboxes/${sbx.sandboxID}`)).json()) as { endAt: string };

    // A shorter connect timeout never shortens; a longer one extends.
    expect((await e2b("POST", `/v2/sandboxes/${sbx.sandboxID}/connect`, { timeout: 10 })).status).toBe(200);
    const same = (await (await e2b("GET", `/sandboxes/${sbx.sandboxID}`)).json()) as { endAt: string };
    expect(same.endAt).toBe(before.endAt);
    expect((await e2b("POST", `/sandboxes/${sbx.sandboxID}/connect`, { timeout: 3000 })).status).toBe(200);
    const later = (await (await e2b("GET", `/sandboxes/${sbx.sandboxID}`)).json()) as { endAt: string };
    expect(Date.parse(later.endAt)).toBeGreaterThan(Date.parse(before.endAt));
    await expectE2bError(await e2b("POST", `/sandboxes/${sbx.sandboxID}/connect`, {}), 400, /timeout/);
  });

  it("timeout sets the end time from now, and refuses non-positive values", async () => {
    const sbx = await create({ timeout: 600 });
    const before = Date.now();
    expect((await e2b("POST", `/sandboxes/${sbx.sandboxID}/timeout`, { timeout: 30 })).status).toBe(204);
    const info = (await (await e2b("GET", `/sandboxes/${sbx.sandboxID}`)).json()) as { endAt: string };
    expect((Date.parse(info.endAt) - before) / 1000).toBeLessThan(40);
    await expectE2bError(await e2b("POST", `/sandboxes/${sbx.sandboxID}/timeout`, { timeout: -1 }), 400);
  });

  it("kill answers 204, then 404 everywhere; other teams' sandboxes are 404", async () => {
    const sbx = await create();
    const other = await h.newTeam("other");
    const asOther = await h.request("DELETE", `/sandboxes/${sbx.sandboxID}`, { key: other.key });
    await expectE2bError(asOther, 404);
    expect((await e2b("DELETE", `/sandboxes/${sbx.sandboxID}`)).status).toBe(204);
    await expectE2bError(await e2b("DELETE", `/sandboxes/${sbx.sandboxID}`), 404);
    await expectE2bError(await e2b("GET", `/sandboxes/${sbx.sandboxID}`), 404);
    await expectE2bError(await e2b("POST", `/sandboxes/${sbx.sandboxID}/pause`), 404);
    await expectE2bError(await e2b("POST", `/v2/sandboxes/${sbx.sandboxID}/connect`, {}), 404);
    await expectE2bError(await e2b("POST", `/sandboxes/${sbx.sandboxID}/timeout`, { timeout: 5 }), 404);
    await expectE2bError(await e2b("GET", "/sandboxes/notanid"), 404);
  });

  it("refreshes only extend a running sandbox's end time (15–3600 s); the old resume answers 201, then 409", async () => {
    const sbx = await create({ timeout: 600 });
    const endAt = async () =>
      Date.parse(((await (await e2b("GET", `/sandboxes/${sbx.sandboxID}`)).json()) as { endAt: string }).endAt);
    const first = await endAt();
    // Shorter than what is left: nothing changes.
    expect((await e2b("POST", `/sandboxes/${sbx.sandboxID}/refreshes`, { duration: 60 })).status).toBe(204);
    expect(await endAt()).toBe(first);
    const before = Date.now();
    expect((await e2b("POST", `/sandboxes/${sbx.sandboxID}/refreshes`, { duration: 3600 })).status).toBe(204);
    const extended = await endAt();
    expect(extended).toBeGreaterThan(first);
    expect(extended - before).toBeGreaterThanOrEqual(3599_000);
    // No body: E2B's default keep-alive (15 s) is shorter than what is left.
    expect((await e2b("POST", `/sandboxes/${sbx.sandboxID}/refreshes`)).status).toBe(204);
    expect(await endAt()).toBe(extended);
    await expectE2bError(await e2b("POST", `/sandboxes/${sbx.sandboxID}/refreshes`, { duration: 3601 }), 400);
    await expectE2bError(await e2b("POST", `/sandboxes/${sbx.sandboxID}/refreshes`, { duration: -5 }), 400);

    await expectE2bError(await e2b("POST", `/sandboxes/${sbx.sandboxID}/resume`, {}), 409, /already running/);
    expect((await e2b("POST", `/sandboxes/${sbx.sandboxID}/pause`, {})).status).toBe(204);
    // A paused sandbox is not kept alive (E2B keeps running ones only).
    await expectE2bError(await e2b("POST", `/sandboxes/${sbx.sandboxID}/refreshes`, { duration: 60 }), 404);
    const resumed = await e2b("POST", `/sandboxes/${sbx.sandboxID}/resume`, { timeout: 120 });
    expect(resumed.status).toBe(201);
    const body = (await resumed.json()) as E2bSandbox;
    expect(body.sandboxID).toBe(sbx.sandboxID);
    expect(body.envdAccessToken).toBe(sbx.envdAccessToken);
    const left = (await endAt()) - Date.now();
    expect(left).toBeGreaterThan(100_000);
    expect(left).toBeLessThanOrEqual(121_000);
    await expectE2bError(await e2b("POST", `/sandboxes/${sbx.sandboxID}/resume`, {}), 409);
  });

  it("answers template build requests in E2B's shape (issue 19: served, test/integration/e2b-templates-edge.test.ts)", async () => {
    await expectE2bError(await e2b("POST", "/v3/templates", { name: "Not A Name" }), 400, /invalid template name/);
    await expectE2bError(await h.request("POST", "/v3/templates", { json: {} }), 401);
  });
});

describe("sandbox proxy routing", () => {
  const envd = (sandboxId: string, path: string, init: RequestInit = {}) =>
    h.app.request(path, {
      ...init,
      headers: { "E2b-Sandbox-Id": sandboxId, "E2b-Sandbox-Port": "49983", ...(init.headers ?? {}) },
    });

  it("routes by headers and by <port>-<id>.<domain> Host to the sandbox's agent", async () => {
    const sbx = await create();
    agent.sandboxes.get(sbx.sandboxID)?.files.set("/home/user/a.txt", new TextEncoder().encode("hello"));
    const byHeaders = await envd(sbx.sandboxID, "/files?path=/home/user/a.txt", {
      headers: { "X-Access-Token": sbx.envdAccessToken },
    });
    expect(byHeaders.status).toBe(200);
    expect(await byHeaders.text()).toBe("hello");
    const byHost = await h.app.request("/files?path=/home/user/a.txt", {
      headers: { host: `49983-${sbx.sandboxID}.sbx.wrenn.test`, "x-access-token": sbx.envdAccessToken },
    });
    expect(byHost.status).toBe(200);
    expect(await byHost.text()).toBe("hello");
  });

  it("answers a missing, killed or paused sandbox with E2B's 502 body", async () => {
    const missing = await envd("abcdefghij0123456789", "/health");
    expect(missing.status).toBe(502);
    // E2B's fields, plus the API's error shape under `error`.
    expect(await missing.json()).toMatchObject({
      sandboxId: "abcdefghij0123456789",
      message: "The sandbox was not found",
      code: 502,
      error: { code: "SANDBOX_NOT_FOUND", message: "The sandbox was not found" },
    });
    const sbx = await create();
    await e2b("POST", `/sandboxes/${sbx.sandboxID}/pause`);
    expect((await envd(sbx.sandboxID, "/health")).status).toBe(502);
    expect(agent.sandboxes.get(sbx.sandboxID)?.sandbox.state).toBeDefined();
    await e2b("DELETE", `/sandboxes/${sbx.sandboxID}`);
    expect((await envd(sbx.sandboxID, "/health")).status).toBe(502);
  });

  it("resumes a paused auto-resume sandbox on traffic", async () => {
    const sbx = await create({ autoPause: true, autoResume: { enabled: true } });
    await e2b("POST", `/sandboxes/${sbx.sandboxID}/pause`);
    agent.sandboxes.get(sbx.sandboxID)?.files.set("/x", new TextEncoder().encode("back"));
    const res = await envd(sbx.sandboxID, "/files?path=/x", { headers: { "x-access-token": sbx.envdAccessToken } });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("back");
    const info = (await (await e2b("GET", `/sandboxes/${sbx.sandboxID}`)).json()) as { state: string };
    expect(info.state).toBe("running");
  });

  it("refuses envd's internal routes and bad routing headers", async () => {
    const sbx = await create();
    const calls = agent.calls.length;
    for (const path of ["/init", "/init/", "//freeze", "/upgrade?x=1"]) {
      const res = await envd(sbx.sandboxID, path, { method: "POST", body: "{}" });
      expect(res.status, path).toBe(404);
    }
    expect(agent.calls.length).toBe(calls);
    const bad = await h.app.request("/health", { headers: { "E2b-Sandbox-Id": sbx.sandboxID } });
    expect(bad.status).toBe(400);
    const badPort = await envd(sbx.sandboxID, "/health", { headers: { "E2b-Sandbox-Port": "70000" } });
    expect(badPort.status).toBe(400);
  });

  it("routes a signed /files URL without routing headers by its signature", async () => {
    const a = await create();
    const b = await create();
    agent.sandboxes.get(b.sandboxID)?.files.set("/home/user/s.txt", new TextEncoder().encode("signed"));
    const signature = await envdFileSignature({
      path: "/home/user/s.txt",
      operation: "read",
      username: "",
      accessToken: b.envdAccessToken,
    });
    const before = agent.calls.filter((c) => c === `proxy GET ${b.sandboxID}`).length;
    const res = await h.app.request(`/files?path=/home/user/s.txt&signature=${encodeURIComponent(signature)}`);
    // The fake envd wants its token in a header; reaching it at all (401 from it) proves the routing.
    expect(agent.calls.filter((c) => c === `proxy GET ${b.sandboxID}`).length).toBe(before + 1);
    expect(agent.calls).not.toContain(`proxy GET ${a.sandboxID}`);
    expect(res.status).toBe(401);
    const nobody = await h.app.request("/files?path=/home/user/s.txt&signature=v1_bogus");
    expect(nobody.status).toBe(502);
  });

  it("answers browsers' CORS preflights for the API and for sandbox traffic", async () => {
    const api = await h.app.request("/v2/sandboxes", {
      method: "OPTIONS",
      headers: {
        origin: "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "x-api-key, content-type",
      },
    });
    expect(api.status).toBe(204);
    expect(api.headers.get("access-control-allow-origin")).toBe("*");
    expect(api.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("x-api-key");
    const list = await e2b("GET", "/v2/sandboxes?limit=1", undefined, { origin: "https://app.example" });
    expect(list.headers.get("access-control-expose-headers")).toContain("X-Next-Token");
    const sandbox = await h.app.request("/process.Process/Start", {
      method: "OPTIONS",
      headers: {
        origin: "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,e2b-sandbox-id,e2b-sandbox-port,x-access-token",
      },
    });
    expect(sandbox.status).toBe(204);
    expect(sandbox.headers.get("access-control-allow-origin")).toBe("https://app.example");
    expect(sandbox.headers.get("access-control-allow-headers")).toContain("x-access-token");
  });

  it("leaves API calls alone", async () => {
    expect((await h.request("GET", "/health")).status).toBe(200);
    expect((await e2b("GET", "/v2/sandboxes")).status).toBe(200);
  });
});
