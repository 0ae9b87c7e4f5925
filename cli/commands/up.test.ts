import { access, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { afterAll, describe, expect, it } from "vitest";
import { parseEnv } from "../../edge/env.js";
import { noopLogger } from "../../edge/logger.js";
import { openNodeDatabase } from "../../edge/node/database.js";
import { startNodeEdge } from "../../edge/node.js";
import { ensureAdminKey } from "../../edge/services/auth/bootstrap.js";
import type { Output } from "../output.js";
import { markAdminKeyPending, markAdminKeyShown, readAdminKeyMarker, settleAdminKey } from "./admin-key.js";
import { initialiseDatabase, listenLine, parseTlsOptions } from "./up.js";

// `wrenn up`'s start-up: /health answers while the database is still being prepared, requests that
// come meanwhile wait for it, and a new data directory is a copy of a cached initdb template.

const dirs: string[] = [];
// One cache for the file: the template test makes it, the /health test then copies from it.
let cacheDir = "";
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "wrenn-up-test-"));
  dirs.push(dir);
  return dir;
}

function capture(): Output & { lines: string[] } {
  const lines: string[] = [];
  return { lines, out: (l) => lines.push(l), err: (l) => lines.push(l), rawOut: () => {}, rawErr: () => {} };
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

describe("wrenn up start-up", () => {
  it("makes a data directory from the cached template: initdb and migrations once, then a copy PGlite opens", async () => {
    const root = await tempDir();
    cacheDir = join(root, "cache");
    const first = join(root, "first");
    const output = capture();
    await initialiseDatabase(first, cacheDir, output);
    expect(output.lines).toEqual([]);
    const cached = await readdir(cacheDir);
    // Only the finished template: no partial build left behind.
    expect(cached).toHaveLength(1);
    expect(cached[0]).toMatch(/^pglite-[\w.+-]+-[0-9a-f]{12}$/);
    expect(await exists(join(cacheDir, cached[0] ?? "", "PG_VERSION"))).toBe(true);

    const second = join(root, "second");
    await initialiseDatabase(second, cacheDir, output);
    expect(await readdir(cacheDir)).toEqual(cached);
    const identifiers: string[] = [];
    for (const dir of [first, second]) {
      const db = await PGlite.create(dir);
      try {
        await db.exec("create table t (v text); insert into t values ('kept')");
        expect((await db.query<{ v: string }>("select v from t")).rows).toEqual([{ v: "kept" }]);
        // Migrated already: the edge's migrations are recorded.
        const applied = await db.query<{ n: number }>("select count(*)::int as n from drizzle.__drizzle_migrations");
        expect(applied.rows[0]?.n).toBeGreaterThan(0);
        const control = await db.query<{ id: string }>("select system_identifier::text as id from pg_control_system()");
        identifiers.push(control.rows[0]?.id ?? "");
      } finally {
        await db.close();
      }
    }
    // Copies of one template, not two runs of initdb (each of which picks a random identifier).
    expect(identifiers[0]).toMatch(/^\d+$/);
    expect(identifiers[1]).toBe(identifiers[0]);
    // The template itself is left pristine by what was done to the copies.
    const again = join(root, "again");
    await initialiseDatabase(again, cacheDir, output);
    const db = await PGlite.create(again);
    try {
      expect((await db.query("select to_regclass('t') as t")).rows).toEqual([{ t: null }]);
    } finally {
      await db.close();
    }
  }, 60_000);

  it("answers /health before the database is ready, and holds API requests until it is", async () => {
    const dataDir = join(await tempDir(), "data");
    const parsed = parseEnv({ WRENN_PORT: "0", WRENN_HOST: "127.0.0.1", WRENN_DATA_DIR: dataDir });
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const databasePrepared = held.then(() => initialiseDatabase(dataDir, cacheDir, capture()));
    let listening: string | undefined;
    const starting = startNodeEdge(parsed.env, noopLogger, {
      databasePrepared,
      onListening: (url) => {
        listening = url;
      },
    });
    for (let i = 0; i < 400 && listening === undefined; i++) await new Promise((r) => setTimeout(r, 25));
    expect(listening).toBeDefined();
    const url = listening ?? "";
    // Live, and saying what it still waits for.
    const early = await fetch(`${url}/health`);
    expect(early.status).toBe(200);
    expect(await early.json()).toMatchObject({ status: "ok", starting: ["database"] });
    // An API request made now is answered only once the database is open, and then normally.
    let answered = false;
    const hosts = fetch(`${url}/v1/hosts`).then((r) => {
      answered = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(answered).toBe(false);
    release();
    const edge = await starting;
    try {
      expect((await hosts).status).toBe(401);
      const ready = await fetch(`${url}/health`);
      const body = (await ready.json()) as Record<string, unknown>;
      expect(body.status).toBe("ok");
      expect(body).not.toHaveProperty("starting");
      expect(edge.generatedAdminKey).toMatch(/^e2b_[0-9a-f]+$/);
    } finally {
      await edge.close();
    }
  }, 60_000);
});

describe("wrenn up's admin key", () => {
  it("is shown once; a key minted while pending but never shown is revoked and replaced; a reset replaces a shown one", async () => {
    const root = await tempDir();
    const dataDir = join(root, "data");
    await initialiseDatabase(dataDir, cacheDir || join(root, "cache"), capture());
    const handle = await openNodeDatabase({ pgliteDataDir: dataDir });
    try {
      const db = handle.db;
      const bootstrap = (secret?: string) =>
        ensureAdminKey({ db } as unknown as Parameters<typeof ensureAdminKey>[0], secret);
      const activeUpKeys = async () =>
        (await db.query.apiKeys.findMany()).filter((k) => k.isAdmin && k.revokedAt === null).map((k) => k.id);

      // First start: pending before the database, the edge mints at open, `up` shows it at ready.
      await markAdminKeyPending(dataDir, false);
      expect(await readAdminKeyMarker(dataDir)).toMatchObject({ state: "pending" });
      const minted = await bootstrap();
      expect(minted.secret).toMatch(/^e2b_[0-9a-f]+$/);
      const first = await settleAdminKey(db, dataDir, minted.secret);
      expect(first).toMatchObject({ kind: "new", secret: minted.secret, replaced: [], reset: false });
      if (first.kind !== "new") throw new Error("expected a key");
      await markAdminKeyShown(dataDir, first.keyId);

      // Later starts: nothing to show, and nothing revoked.
      await markAdminKeyPending(dataDir, false);
      expect(await readAdminKeyMarker(dataDir)).toMatchObject({ state: "shown", keyId: first.keyId });
      expect(await settleAdminKey(db, dataDir, undefined)).toEqual({ kind: "shown-before" });
      expect(await activeUpKeys()).toEqual([first.keyId]);

      // --reset-admin-key: the shown key is revoked, a new one printed.
      await markAdminKeyPending(dataDir, true);
      const reset = await settleAdminKey(db, dataDir, undefined);
      if (reset.kind !== "new") throw new Error("expected a key");
      expect(reset.reset).toBe(true);
      expect(reset.replaced.map((k) => k.id)).toEqual([first.keyId]);
      expect(await activeUpKeys()).toEqual([reset.keyId]);
      await markAdminKeyShown(dataDir, reset.keyId);
    } finally {
      await handle.close();
    }

    // A new data directory whose first start dies after the database minted its key: the next start
    // revokes that one and makes a new one.
    const other = join(root, "other");
    await initialiseDatabase(other, cacheDir || join(root, "cache"), capture());
    await markAdminKeyPending(other, false);
    const second = await openNodeDatabase({ pgliteDataDir: other });
    try {
      const db = second.db;
      const unseen = await ensureAdminKey({ db } as unknown as Parameters<typeof ensureAdminKey>[0]);
      // (the start dies here; the next one opens the same database and mints nothing at open)
      const again = await ensureAdminKey({ db } as unknown as Parameters<typeof ensureAdminKey>[0]);
      expect(again.secret).toBeUndefined();
      const next = await settleAdminKey(db, other, undefined);
      if (next.kind !== "new") throw new Error("expected a key");
      expect(next.replaced.map((k) => k.id)).toEqual([unseen.keyId]);
      expect(next.secret).not.toBe(unseen.secret);
      const keys = await db.query.apiKeys.findMany();
      expect(keys.find((k) => k.id === unseen.keyId)?.revokedAt).toBeInstanceOf(Date);
      expect(keys.find((k) => k.id === next.keyId)?.revokedAt).toBeNull();
    } finally {
      await second.close();
    }
  }, 120_000);

  it("says where the API listens and what that exposes", () => {
    expect(listenLine("127.0.0.1", 3000)).toMatch(/^API listening on 127\.0\.0\.1:3000 only \(this machine\)/);
    expect(listenLine("0.0.0.0", 3000)).toMatch(/0\.0\.0\.0:3000 \(WRENN_HOST\), plain HTTP: put TLS in front/);
  });
});

describe("wrenn up --domain", () => {
  it("takes a domain with a local CA by default, or a certificate and key as a pair", () => {
    expect(parseTlsOptions({})).toBeUndefined();
    expect(parseTlsOptions({ domain: "Wrenn.Localhost" })).toEqual({ domain: "wrenn.localhost", port: 3443 });
    expect(
      parseTlsOptions({ domain: "sb.example.test", "tls-port": "443", "tls-cert": "c.pem", "tls-key": "k.pem" }),
    ).toMatchObject({
      domain: "sb.example.test",
      port: 443,
      certFile: expect.stringMatching(/\/c\.pem$/),
      keyFile: expect.stringMatching(/\/k\.pem$/),
    });
    expect(() => parseTlsOptions({ domain: "x.test", "tls-cert": "c.pem" })).toThrow(/go together/);
    expect(() => parseTlsOptions({ "tls-port": "8443" })).toThrow(/go with --domain/);
    expect(() => parseTlsOptions({ domain: "bad domain" })).toThrow(/--domain takes a domain name/);
    expect(() => parseTlsOptions({ domain: "x.test", "tls-port": "70000" })).toThrow(/--tls-port takes a port number/);
  });
});
