import { describe, expect, it } from "vitest";
import { expectError, routeStack } from "../../../test/helpers/edge-routes.js";

const stack = routeStack();

describe("/v1/webhooks", () => {
  it("creates (secret shown once), lists, reads, changes and deletes a team's webhooks", async () => {
    const team = await stack.h.newTeam();
    const other = await stack.h.newTeam();
    const made = await stack.h.request("POST", "/v1/webhooks", {
      key: team.key,
      json: { url: "https://hooks.example.com/wrenn", eventTypes: ["sandbox.killed", "sandbox.*"], description: "ops" },
    });
    expect(made.status).toBe(201);
    const created = (await made.json()) as { id: string; secret: string; eventTypes: string[]; enabled: boolean };
    expect(created).toMatchObject({ enabled: true, eventTypes: ["sandbox.killed", "sandbox.*"] });
    expect(created.secret).toMatch(/^whsec_/);
    expect(created.id).toMatch(/^wh_/);

    const listed = await stack.h.request("GET", "/v1/webhooks", { key: team.key });
    const body = (await listed.json()) as { webhooks: Array<{ id: string }> };
    expect(body.webhooks.map((w) => w.id)).toEqual([created.id]);
    expect(JSON.stringify(body)).not.toContain(created.secret);
    const got = await stack.h.request("GET", `/v1/webhooks/${created.id}`, { key: team.key });
    expect(JSON.stringify(await got.json())).not.toContain(created.secret);

    const patched = await stack.h.request("PATCH", `/v1/webhooks/${created.id}`, {
      key: team.key,
      json: { enabled: false, eventTypes: [] },
    });
    expect(await patched.json()).toMatchObject({ enabled: false, eventTypes: [] });

    // Another team cannot see, change or delete it.
    await expectError(await stack.h.request("GET", `/v1/webhooks/${created.id}`, { key: other.key }), 404, "NOT_FOUND");
    await expectError(
      await stack.h.request("DELETE", `/v1/webhooks/${created.id}`, { key: other.key }),
      404,
      "NOT_FOUND",
    );
    expect(
      ((await (await stack.h.request("GET", "/v1/webhooks", { key: other.key })).json()) as { webhooks: [] }).webhooks,
    ).toEqual([]);
    const deliveries = await stack.h.request("GET", `/v1/webhooks/${created.id}/deliveries`, { key: team.key });
    expect(await deliveries.json()).toEqual({ deliveries: [] });

    expect((await stack.h.request("DELETE", `/v1/webhooks/${created.id}`, { key: team.key })).status).toBe(204);
    await expectError(await stack.h.request("GET", `/v1/webhooks/${created.id}`, { key: team.key }), 404, "NOT_FOUND");
  });

  it("refuses loopback, private and metadata URLs with a clear 400 unless the operator allows them", async () => {
    const team = await stack.h.newTeam();
    for (const url of ["http://127.0.0.1:9000/hook", "http://localhost/", "http://169.254.169.254/", "http://[::1]/"]) {
      const refused = await expectError(
        await stack.h.request("POST", "/v1/webhooks", { key: team.key, json: { url } }),
        400,
        "BAD_REQUEST",
      );
      expect(refused.error.message).toMatch(/only public addresses are allowed.*WRENN_WEBHOOKS_ALLOW_PRIVATE/);
    }
    const made = await stack.h.request("POST", "/v1/webhooks", {
      key: team.key,
      json: { url: "https://hooks.example.com/" },
    });
    const { id } = (await made.json()) as { id: string };
    await expectError(
      await stack.h.request("PATCH", `/v1/webhooks/${id}`, { key: team.key, json: { url: "http://10.0.0.1/" } }),
      400,
      "BAD_REQUEST",
    );
  });

  it("refuses unknown event types and unknown fields", async () => {
    const team = await stack.h.newTeam();
    const bad = await expectError(
      await stack.h.request("POST", "/v1/webhooks", {
        key: team.key,
        json: { url: "https://hooks.example.com/", eventTypes: ["sandbox.exploded"] },
      }),
      400,
      "BAD_REQUEST",
    );
    expect(bad.error.message).toContain("sandbox.exploded");
    await expectError(
      await stack.h.request("POST", "/v1/webhooks", {
        key: team.key,
        json: { url: "https://hooks.example.com/", secret: "mine" },
      }),
      400,
      "BAD_REQUEST",
    );
  });

  it("gives each team one callback secret, made on first use", async () => {
    const team = await stack.h.newTeam();
    const first = await stack.h.request("GET", "/v1/webhooks/callback-secret", { key: team.key });
    const second = await stack.h.request("GET", "/v1/webhooks/callback-secret", { key: team.key });
    const a = ((await first.json()) as { secret: string }).secret;
    expect(a).toMatch(/^whsec_/);
    expect(((await second.json()) as { secret: string }).secret).toBe(a);
    const other = await stack.h.newTeam();
    const theirs = await stack.h.request("GET", "/v1/webhooks/callback-secret", { key: other.key });
    expect(((await theirs.json()) as { secret: string }).secret).not.toBe(a);
  });
});
