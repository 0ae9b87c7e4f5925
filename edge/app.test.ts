import { describe, expect, it } from "vitest";
import { expectError, routeStack } from "../test/helpers/edge-routes.js";

const stack = routeStack();

describe("meta", () => {
  it("serves health, JSON 404s, request ids, and forwards them to the agent", async () => {
    const health = await stack.h.request("GET", "/health");
    expect(await health.json()).toMatchObject({ status: "ok" });
    await expectError(await stack.h.request("GET", "/nope"), 404, "NOT_FOUND");
    const team = await stack.h.newTeam();
    await expectError(await stack.h.request("GET", "/v1/nope", { key: team.key }), 404, "NOT_FOUND");
    const res = await stack.h.request("POST", "/v1/sandboxes", {
      key: team.key,
      json: {},
      headers: { "x-request-id": "trace-1234567890" },
    });
    expect(res.headers.get("x-request-id")).toBe("trace-1234567890");
    expect(stack.h.fakes?.requestIds).toContain("trace-1234567890");
  });

  it("serves OpenAPI 3.1 as JSON and YAML, and the docs page with local assets", async () => {
    const json = await stack.h.request("GET", "/openapi.json");
    const doc = (await json.json()) as {
      openapi: string;
      paths: Record<string, Record<string, { operationId: string }>>;
    };
    expect(doc.openapi).toBe("3.1.0");
    const ops = Object.values(doc.paths).flatMap((p) => Object.values(p).map((o) => o.operationId));
    expect(ops).toEqual(
      expect.arrayContaining(["createSandbox", "execCommandStream", "writeFile", "registerHost", "revokeApiKey"]),
    );
    const yaml = await stack.h.request("GET", "/openapi.yaml");
    expect(yaml.headers.get("content-type")).toMatch(/yaml/);
    expect(await yaml.text()).toMatch(/^openapi: 3\.1\.0/m);
    const docs = await stack.h.request("GET", "/docs");
    const html = await docs.text();
    expect(html).toContain("/docs/assets/swagger-ui-bundle.js");
    expect(html).not.toMatch(/cdn|unpkg|jsdelivr/);
    const js = await stack.h.request("GET", "/docs/assets/swagger-ui-bundle.js");
    expect(js.status).toBe(200);
    expect((await js.text()).length).toBeGreaterThan(100_000);
    expect((await stack.h.request("GET", "/docs/assets/..%2Fpackage.json")).status).toBe(404);
  });
});
