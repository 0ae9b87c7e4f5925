import { ALL_TRAFFIC, Sandbox as E2bSandbox } from "e2b";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { serveOnLoopback } from "../../../test/helpers/cli-run.js";
import { newSandbox, routeStack } from "../../../test/helpers/edge-routes.js";

// The official e2b SDK's network calls (static ones: they need no envd) against the edge on loopback.
const stack = routeStack();
let server: Awaited<ReturnType<typeof serveOnLoopback>>;

beforeAll(async () => {
  server = await serveOnLoopback(stack.h.app.fetch);
});
afterAll(async () => {
  await server?.close();
});

describe("e2b SDK network", () => {
  it("updateNetwork replaces the rules and getInfo reads them back", async () => {
    const team = await stack.h.newTeam();
    const sb = await newSandbox(stack.h, team.key);
    const opts = { apiKey: team.key, apiUrl: server.url, domain: "localhost" };
    await E2bSandbox.updateNetwork(
      sb.id,
      { allowOut: ["*.example.test", "192.88.99.7"], denyOut: [ALL_TRAFFIC], allowInternetAccess: false },
      opts,
    );
    const agentSandbox = stack.agent.sandboxes.get(sb.id)?.sandbox;
    expect(agentSandbox?.network?.allowOut).toEqual(["*.example.test", "192.88.99.7"]);
    expect(agentSandbox?.network?.denyOut).toEqual([ALL_TRAFFIC]);
    expect(agentSandbox?.internetAccess).toBe(false);
    const info = await E2bSandbox.getInfo(sb.id, opts);
    expect(info.allowInternetAccess).toBe(false);
    expect(info.network).toMatchObject({ allowOut: ["*.example.test", "192.88.99.7"], denyOut: [ALL_TRAFFIC] });

    await expect(E2bSandbox.updateNetwork(sb.id, { allowOut: ["bad host!"] }, opts)).rejects.toThrow(/bad host!/);
    await expect(E2bSandbox.updateNetwork("zzzzzzzzzzzzzzzzzzzz", { allowOut: [] }, opts)).rejects.toThrow(
      /not found/i,
    );
  });
});
