import type { ConnectRouter } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { maxConcurrentExecs } from "../../edge/services/sandboxes/exec.js";
import { addFakeHost, createEdgeHarness, type EdgeHarness, type FakeAgent } from "../helpers/edge-app.js";

/**
 * One edge process runs at most `maxConcurrentExecs` unary execs at once: each holds a command's whole
 * output until it answers, so a tenant starting many long commands that print a lot could otherwise
 * take the process's memory. Calls past the cap answer 429 RATE_LIMITED at once.
 */

/** Makes the fake agent's Exec wait until `release` is called. */
function holdExecs(agent: FakeAgent): { release: () => void; waiting: () => number } {
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let waiting = 0;
  const base = agent.routes;
  agent.routes = (router: ConnectRouter) =>
    base({
      ...router,
      service: (service, impl, options) =>
        router.service(
          service,
          {
            ...impl,
            exec: async (req: never, ctx: never) => {
              waiting++;
              await gate;
              return (impl as { exec: (r: never, c: never) => unknown }).exec(req, ctx);
            },
          } as typeof impl,
          options,
        ),
    } as ConnectRouter);
  return { release, waiting: () => waiting };
}

describe("concurrent exec calls per edge process", () => {
  let h: EdgeHarness;
  let key = "";
  let sandboxId = "";
  let hold: ReturnType<typeof holdExecs>;

  beforeAll(async () => {
    h = await createEdgeHarness();
    const { agent } = await addFakeHost(h);
    hold = holdExecs(agent);
    ({ key } = await h.newTeam("exec-cap"));
    const created = await h.request("POST", "/v1/sandboxes", { key, json: { template: "minimal", timeoutSec: 600 } });
    expect(created.status, await created.clone().text()).toBe(201);
    sandboxId = ((await created.json()) as { id: string }).id;
  }, 60_000);

  afterAll(async () => {
    hold?.release();
    await h?.close();
  });

  it("refuses calls past the cap with 429 RATE_LIMITED and serves again once they finish", async () => {
    const exec = () => h.request("POST", `/v1/sandboxes/${sandboxId}/exec`, { key, json: { cmd: "echo hi" } });
    const held = Array.from({ length: maxConcurrentExecs }, () => exec());
    const deadline = Date.now() + 20_000;
    while (hold.waiting() < maxConcurrentExecs && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(hold.waiting()).toBe(maxConcurrentExecs);

    const refused = await exec();
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("RATE_LIMITED");

    hold.release();
    for (const res of await Promise.all(held)) expect(res.status).toBe(200);
    const after = await exec();
    expect(after.status).toBe(200);
    expect(((await after.json()) as { stdout: string }).stdout).toBe("hi\n");
  });
});
