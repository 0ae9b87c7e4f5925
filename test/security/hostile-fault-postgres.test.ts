import { execFile } from "node:child_process";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEdgeHarness, type EdgeHarness } from "../helpers/edge-app.js";
import { type PostgresServer, startPostgres } from "../helpers/postgres.js";

/**
 * PostgreSQL restarted in the middle of traffic: requests made while it is down answer 503
 * `DB_UNAVAILABLE` in the error shape (never a 500), the edge serves again by itself once the server
 * is back (no restart of the edge), and every write that answered success is there exactly once.
 */

const run = promisify(execFile);

async function pgCtl(pg: PostgresServer, args: string[]): Promise<void> {
  const majors = (await readdir("/usr/lib/postgresql")).filter((d) => /^\d+$/.test(d));
  const bin = `/usr/lib/postgresql/${majors.sort((a, b) => Number(b) - Number(a))[0]}/bin/pg_ctl`;
  await run("runuser", ["-u", "postgres", "--", bin, "-D", join(pg.dir, "data"), ...args], { timeout: 60_000 });
}

/** Stops the server (fast shutdown: sessions are cut, as in a restart or failover). */
const stopServer = (pg: PostgresServer) => pgCtl(pg, ["-m", "fast", "-w", "stop"]);
/** Starts it again on the same port and socket directory as `startPostgres` did. */
const startServer = (pg: PostgresServer) =>
  pgCtl(pg, [
    "-l",
    join(pg.dir, "server.log"),
    "-o",
    `-p ${pg.port} -c listen_addresses=127.0.0.1 -k ${join(pg.dir, "sock")} -c fsync=off -c max_connections=50`,
    "-w",
    "start",
  ]);

interface Outcome {
  status: number;
  code?: string;
  requestId?: string;
  keyId?: string;
  name: string;
}

describe("PostgreSQL restarted mid-traffic", () => {
  let pg: PostgresServer | undefined;
  let h: EdgeHarness | undefined;

  beforeAll(async () => {
    pg = await startPostgres();
    h = await createEdgeHarness({ databaseUrl: pg.url });
  }, 120_000);

  afterAll(async () => {
    // A pool that cannot end (a connection the restart left behind) must not hold the suite.
    await Promise.race([h?.close().catch(() => {}), new Promise((r) => setTimeout(r, 10_000))]);
    await pg?.stop();
  });

  it("answers 503 DB_UNAVAILABLE while it is down, recovers by itself, and loses or doubles no row", async () => {
    if (!h || !pg) throw new Error("no harness");
    const harness = h;
    const server = pg;
    // Admin writes, each key in a new team of its own: a per-team key quota never answers for the database.
    const key = harness.adminKey;
    const outcomes: Outcome[] = [];
    let serial = 0;
    let stopClients = false;
    // Four clients creating API keys (a write in a transaction) and listing them (a read), back to back.
    const client = async (n: number) => {
      while (!stopClients) {
        const name = `k-${n}-${serial++}`;
        const created = await harness.request("POST", "/v1/api-keys", { key, json: { name, newTeamName: name } });
        const body = (await created.json().catch(() => ({}))) as {
          id?: string;
          error?: { code?: string; requestId?: string };
        };
        outcomes.push({
          status: created.status,
          name,
          ...(body.id ? { keyId: body.id } : {}),
          ...(body.error?.code ? { code: body.error.code } : {}),
          ...(body.error?.requestId ? { requestId: body.error.requestId } : {}),
        });
        const listed = await harness.request("GET", "/v1/api-keys", { key });
        const listBody = (await listed.json().catch(() => ({}))) as { error?: { code?: string } };
        outcomes.push({
          status: listed.status,
          name: "list",
          ...(listBody.error?.code ? { code: listBody.error.code } : {}),
        });
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const clients = Promise.all([0, 1, 2, 3].map(client));
    await new Promise((r) => setTimeout(r, 1_000));
    await stopServer(server);
    const downAt = outcomes.length;
    await new Promise((r) => setTimeout(r, 2_000));
    const duringOutage = outcomes.slice(downAt);
    await startServer(server);
    // The edge is not touched: it must find the server again on its own.
    const deadline = Date.now() + 30_000;
    let recoveredAt = -1;
    while (Date.now() < deadline) {
      const tail = outcomes.slice(-8);
      if (tail.length === 8 && tail.every((o) => o.status === 200 || o.status === 201)) {
        recoveredAt = outcomes.length;
        break;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    await new Promise((r) => setTimeout(r, 500));
    stopClients = true;
    await clients;

    expect(
      recoveredAt,
      `the edge did not recover within 30 s of the restart: ${JSON.stringify(outcomes.slice(-6))}`,
    ).toBeGreaterThan(0);
    // While it was down: failures, all of them 503 DB_UNAVAILABLE in the error shape.
    const failures = outcomes.filter((o) => o.status >= 400);
    expect(duringOutage.some((o) => o.status === 503)).toBe(true);
    for (const failure of failures) {
      expect(failure.status, JSON.stringify(failure)).toBe(503);
      expect(failure.code, JSON.stringify(failure)).toBe("DB_UNAVAILABLE");
      if (failure.name !== "list") expect(failure.requestId).toMatch(/^req_/);
    }
    expect(outcomes.every((o) => o.status !== 500)).toBe(true);

    // Every key that answered 201 is stored exactly once; none that answered 503 half-exists twice.
    const created = outcomes.filter((o) => o.status === 201);
    expect(created.length).toBeGreaterThan(0);
    const rows = await harness.database.db.execute<{ id: string; name: string }>(
      sql`select id, name from api_keys where name like 'k-%'`,
    );
    const stored = (
      Array.isArray(rows) ? rows : (rows as { rows: Array<{ id: string; name: string }> }).rows
    ) as Array<{
      id: string;
      name: string;
    }>;
    const byName = new Map<string, number>();
    for (const row of stored) byName.set(row.name, (byName.get(row.name) ?? 0) + 1);
    for (const o of created) {
      expect(byName.get(o.name), o.name).toBe(1);
      expect(stored.find((r) => r.name === o.name)?.id).toBe(o.keyId);
    }
    for (const [name, count] of byName) expect(count, name).toBe(1);
  }, 120_000);
});
