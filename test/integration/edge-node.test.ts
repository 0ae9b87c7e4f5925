import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseEnv } from "../../edge/env.js";
import { noopLogger } from "../../edge/logger.js";
import { startNodeEdge } from "../../edge/node.js";

// The Node entry: PGlite on disk, migrations, first-run admin key, encryption key file, restart.
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function env(values: Record<string, string>) {
  const parsed = parseEnv({ WRENN_PORT: "0", WRENN_HOST: "127.0.0.1", ...values });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  return parsed.env;
}

describe("startNodeEdge", () => {
  it("creates an admin key once on an empty database, keeps data and keys across restarts", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "wrenn-edge-node-"));
    dirs.push(dataDir);
    const first = await startNodeEdge(env({ WRENN_DATA_DIR: dataDir }), noopLogger);
    let adminKey = "";
    try {
      adminKey = first.generatedAdminKey ?? "";
      expect(adminKey).toMatch(/^e2b_[0-9a-f]+$/);
      const keyFile = join(dataDir, "encryption.key");
      expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
      expect((await readFile(keyFile, "utf8")).trim()).toMatch(/^[0-9a-f]{64}$/);
      const health = await fetch(`${first.url}/health`);
      expect(health.status).toBe(200);
      expect(((await health.json()) as { version: string }).version).toMatch(/^\d+\.\d+\.\d+/);
      const made = await fetch(`${first.url}/v1/api-keys`, {
        method: "POST",
        headers: { "x-api-key": adminKey, "content-type": "application/json" },
        body: JSON.stringify({ name: "kept", newTeamName: "kept" }),
      });
      expect(made.status).toBe(201);
    } finally {
      await first.close();
    }
    const second = await startNodeEdge(env({ WRENN_DATA_DIR: dataDir }), noopLogger);
    try {
      expect(second.generatedAdminKey).toBeUndefined();
      const keys = await fetch(`${second.url}/v1/api-keys?all=true`, {
        headers: { authorization: `Bearer ${adminKey}` },
      });
      expect(keys.status).toBe(200);
      const names = ((await keys.json()) as { apiKeys: Array<{ name: string }> }).apiKeys.map((k) => k.name);
      expect(names).toContain("kept");
      const unknown = await fetch(`${second.url}/nope`);
      expect(unknown.status).toBe(404);
      expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe("NOT_FOUND");
    } finally {
      await second.close();
    }
  });

  it("installs WRENN_ADMIN_API_KEY instead of generating one", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "wrenn-edge-node-"));
    dirs.push(dataDir);
    const adminKey = "wrn_configured_admin_key_0123456789";
    const edge = await startNodeEdge(env({ WRENN_DATA_DIR: dataDir, WRENN_ADMIN_API_KEY: adminKey }), noopLogger);
    try {
      expect(edge.generatedAdminKey).toBeUndefined();
      const hosts = await fetch(`${edge.url}/v1/hosts`, { headers: { "x-api-key": adminKey } });
      expect(hosts.status).toBe(200);
    } finally {
      await edge.close();
    }
  });

  it("requires an encryption key with an external database", async () => {
    await expect(startNodeEdge(env({ DATABASE_URL: "postgres://u:p@127.0.0.1:1/x" }), noopLogger)).rejects.toThrow(
      /WRENN_ENCRYPTION_KEY/,
    );
  });
});
