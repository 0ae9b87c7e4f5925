import { describe, expect, it } from "vitest";
import { expectError, routeStack } from "../../../test/helpers/edge-routes.js";

const stack = routeStack();

describe("api keys", () => {
  it("creates (secret once), lists without secrets, and revokes", async () => {
    const team = await stack.h.newTeam();
    const created = await stack.h.request("POST", "/v1/api-keys", { key: team.key, json: { name: "ci" } });
    expect(created.status).toBe(201);
    const key = (await created.json()) as {
      id: string;
      secret: string;
      prefix: string;
      teamId: string;
      isAdmin: boolean;
    };
    expect(key).toMatchObject({ teamId: team.teamId, isAdmin: false });
    expect(key.secret.startsWith(key.prefix)).toBe(true);
    expect((await stack.h.request("GET", "/v1/sandboxes", { key: key.secret })).status).toBe(200);
    const list = await stack.h.request("GET", "/v1/api-keys", { key: team.key });
    const text = await list.text();
    expect(text).not.toContain(key.secret);
    expect((JSON.parse(text) as { apiKeys: unknown[] }).apiKeys).toHaveLength(2);
    const revoked = await stack.h.request("DELETE", `/v1/api-keys/${key.id}`, { key: team.key });
    expect(((await revoked.json()) as { revokedAt: string | null }).revokedAt).not.toBeNull();
    await expectError(await stack.h.request("GET", "/v1/sandboxes", { key: key.secret }), 401, "UNAUTHORIZED");
  });

  it("keeps non-admins inside their team", async () => {
    const a = await stack.h.newTeam();
    const b = await stack.h.newTeam();
    await expectError(
      await stack.h.request("POST", "/v1/api-keys", { key: a.key, json: { isAdmin: true } }),
      403,
      "FORBIDDEN",
    );
    await expectError(
      await stack.h.request("POST", "/v1/api-keys", { key: a.key, json: { teamId: b.teamId } }),
      403,
      "FORBIDDEN",
    );
    await expectError(await stack.h.request("GET", "/v1/api-keys?all=true", { key: a.key }), 403, "FORBIDDEN");
    await expectError(await stack.h.request("DELETE", `/v1/api-keys/${b.keyId}`, { key: a.key }), 404, "NOT_FOUND");
  });

  it("lets admins create keys in new or existing teams", async () => {
    const made = await stack.h.request("POST", "/v1/api-keys", {
      key: stack.h.adminKey,
      json: { name: "t", newTeamName: "acme" },
    });
    const key = (await made.json()) as { teamId: string; secret: string };
    expect(key.teamId).toMatch(/^team_/);
    const again = await stack.h.request("POST", "/v1/api-keys", {
      key: stack.h.adminKey,
      json: { teamId: key.teamId },
    });
    expect(((await again.json()) as { teamId: string }).teamId).toBe(key.teamId);
    await expectError(
      await stack.h.request("POST", "/v1/api-keys", { key: stack.h.adminKey, json: { teamId: "team_nope" } }),
      404,
      "NOT_FOUND",
    );
  });
});
